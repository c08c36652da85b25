//! Checking and compiling a [`SourceSet`] into [`Workflows`].
//!
//! Two passes: `symbols` first collects every defined name (reporting
//! duplicates with both places), then each section compiles its items against
//! those names. Every problem goes into one [`Diagnostics`]; nothing stops at
//! the first error, so one run shows everything to fix.

mod actions;
mod completeness;
mod context;
mod mailboxes;
mod pipelines;
mod rules;
mod scoring;
mod sequences;
mod settings;
mod sources;
mod symbols;
mod templates;
mod workflow_tests;

use super::diagnostic::Diagnostics;
use super::loader::SourceSet;
use super::workflows::Workflows;
use context::Cx;
use std::collections::HashMap;

/// Event types dealflow raises itself (SPEC §3.5).
pub const BUILTIN_EVENTS: &[&str] = crate::state::BuiltinEvent::NAMES;

/// Compiles everything read from a folder. Answers `None` when any error
/// was recorded; warnings alone still give a [`Workflows`].
pub fn compile(set: SourceSet, diags: &mut Diagnostics) -> Option<Workflows> {
    let mut cx = Cx::new(diags, &set.secrets);
    let symbols = symbols::collect(&set, &mut cx);
    let templates = templates::compile(&set, &symbols, &mut cx);
    let settings = settings::compile_settings(&set, &mut cx);
    let calendars = settings::compile_calendars(&set, &mut cx);
    let team = settings::compile_team(&set, &symbols, &mut cx);
    let pipelines = pipelines::compile(&set, &symbols, &mut cx);
    let sequences = sequences::compile(&set, &symbols, &calendars, &mut cx);
    let rules = rules::compile(&set, &symbols, &settings, &mut cx);
    let scoring = scoring::compile(&set, &symbols, &mut cx);
    let sources = sources::compile(&set, &mut cx);
    let tests = workflow_tests::compile(&set, &symbols, &sources, &mut cx);
    symbols.warn_unused(&mut cx);
    if cx.failed() {
        let _ = cx.finish();
        return None;
    }
    let (trigger_index, wildcard_rules) = index_triggers(&rules);
    let workflows = Workflows {
        version: set.version.clone(),
        kinds: symbols.kinds.clone(),
        files: set
            .files
            .iter()
            .map(|f| f.path.clone())
            .chain(set.templates.iter().map(|t| t.path.clone()))
            .collect(),
        settings,
        calendars,
        team,
        pipelines,
        rules,
        sequences,
        scoring,
        templates,
        sources,
        tests,
        secrets: set.secrets.clone(),
        trigger_index,
        wildcard_rules,
        expressions: Default::default(),
    };
    completeness::check(&set, &workflows, &mut cx);
    let (expressions, failed) = cx.finish();
    (!failed).then_some(Workflows {
        expressions,
        ..workflows
    })
}

/// Event type → rule indexes, so an event finds its rules without a scan.
fn index_triggers(rules: &[super::workflows::Rule]) -> (HashMap<String, Vec<usize>>, Vec<usize>) {
    use super::workflows::RuleTrigger;
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    let mut wildcard = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let RuleTrigger::Events(types) = &rule.trigger {
            for t in types {
                if t == "*" {
                    wildcard.push(i);
                } else {
                    index.entry(t.clone()).or_default().push(i);
                }
            }
        }
    }
    (index, wildcard)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn the_trigger_index_finds_rules_by_type_and_wildcard_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
rules:
  - { name: any, on: "*", do: [ { emit: { type: seen } } ] }
  - { name: forms, on: [form.submitted, page.viewed], do: [ { emit: { type: f } } ] }
  - { name: nightly, on: { schedule: "0 2 * * *" }, do: [ { webhook: { url: "https://h.example" } } ] }
  - { name: views, on: page.viewed, do: [ { emit: { type: v } } ] }
"#;
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        let (w, d) = crate::config::load(dir.path(), &HashMap::<String, String>::new());
        let w = w.unwrap_or_else(|| panic!("{d:?}"));
        let names = |t: &str| {
            w.rules_for(t)
                .map(|(i, r)| format!("{i}:{}", r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names("page.viewed"), ["0:any", "1:forms", "3:views"]);
        assert_eq!(names("other"), ["0:any"]);
        assert_eq!(w.scheduled_rules().count(), 1);
    }
}
