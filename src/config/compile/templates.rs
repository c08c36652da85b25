//! Email template files: subject and body compiled, names checked.

use super::context::{Cx, Scope};
use super::symbols::Symbols;
use crate::config::expr::Escaping;
use crate::config::loader::SourceSet;
use crate::config::workflows::EmailTemplate;
use crate::state::BodyFormat;
use std::collections::BTreeMap;

/// Names a template file may read: it can be used by any rule, sequence or
/// notification, so every kind's name is in scope, plus what emails add.
pub fn template_file_scope(symbols: &Symbols) -> Scope {
    Scope::record(None)
        .with(
            symbols
                .kinds
                .iter()
                .cloned()
                .chain(["unsubscribe_url", "sequence", "step"].map(String::from)),
        )
        // A kind named only in a file that did not parse is still a kind.
        .open_when(symbols.incomplete)
}

/// Compiles every template file.
pub fn compile(set: &SourceSet, symbols: &Symbols, cx: &mut Cx) -> BTreeMap<String, EmailTemplate> {
    let scope = template_file_scope(symbols);
    let mut out = BTreeMap::new();
    for t in &set.templates {
        cx.enter_file(&t.path, "");
        let escaping = match t.format {
            BodyFormat::Text => Escaping::None,
            BodyFormat::Markdown | BodyFormat::Html => Escaping::Html,
        };
        let subject = t
            .subject
            .as_ref()
            .and_then(|s| cx.template(s, &scope, Escaping::None));
        let body = cx.file_template(&t.body, t.body_line_offset + 1, &scope, escaping);
        if let Some(body) = body {
            out.entry(t.name.clone()).or_insert(EmailTemplate {
                name: t.name.clone(),
                format: t.format,
                subject,
                body,
            });
        }
    }
    out
}
