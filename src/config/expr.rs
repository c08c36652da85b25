//! Expressions (`if:`) and text templates (`{{ ... }}`), both minijinja.
//!
//! Everything is compiled when the folder loads, so syntax errors and
//! unknown names are validation errors with positions. Evaluation is bounded
//! by fuel (no runaway loops) and uses semi-strict undefined values: a
//! missing field is falsy in a condition but an error when rendered, so no
//! email goes out as "Hi ,".

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;

/// Instructions one evaluation may spend before it is stopped.
const FUEL_PER_EVALUATION: u64 = 100_000;

/// Names minijinja provides itself; never "unknown".
const BUILTIN_NAMES: &[&str] = &[
    "range",
    "dict",
    "debug",
    "namespace",
    "loop",
    "self",
    "true",
    "false",
    "none",
];

/// A compiled condition, stored in [`Expressions`] as a template that
/// renders `1` when the expression is true, so evaluating it never parses.
#[derive(Clone)]
pub struct Condition {
    /// The expression as written.
    pub source: String,
    key: String,
}

/// A compiled text template, stored in [`Expressions`] under `key`.
#[derive(Clone)]
pub struct TextTemplate {
    /// The template as written.
    pub source: String,
    key: String,
}

impl Condition {
    /// A condition that is never evaluated, for tests of code that only
    /// looks at which kind of rule holds it.
    #[cfg(test)]
    pub fn for_tests(source: &str) -> Self {
        Condition {
            source: source.to_owned(),
            key: String::new(),
        }
    }
}

// Shown by source only: the storage key depends on what was compiled
// before, and `dealflow plan` compares items by their Debug form.
impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl std::fmt::Debug for TextTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TextTemplate").field(&self.source).finish()
    }
}

/// A compile error inside an expression or template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxProblem {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the source where it is, when minijinja knows.
    pub offset: Option<usize>,
}

/// A run-time failure of a condition or template (SPEC §3.1: the rule's run
/// fails visibly; nothing else is affected).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// Whether HTML special characters in values are escaped when rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Plain text: values as they are.
    None,
    /// HTML: values escaped.
    Html,
}

/// The minijinja environment holding every compiled template of a set.
#[derive(Debug)]
pub struct Expressions {
    env: Environment<'static>,
    next_key: usize,
}

impl Default for Expressions {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL_PER_EVALUATION));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        Expressions { env, next_key: 0 }
    }
}

impl Expressions {
    /// Compiles a condition; answers the names it reads from outside.
    pub fn condition(
        &mut self,
        source: &str,
    ) -> Result<(Condition, BTreeSet<String>), SyntaxProblem> {
        // Compiled as an expression first, so errors point into the source
        // as written; the wrapping template below cannot fail after that.
        let expr = self
            .env
            .compile_expression(source)
            .map_err(syntax_problem)?;
        let names = outside_names(expr.undeclared_variables(false));
        let key = self.next_key(".cond");
        let wrapped = format!("{{% if ({source}\n) %}}1{{% endif %}}");
        self.env
            .add_template_owned(key.clone(), wrapped)
            .map_err(syntax_problem)?;
        let source = source.to_owned();
        Ok((Condition { source, key }, names))
    }

    fn next_key(&mut self, suffix: &str) -> String {
        self.next_key += 1;
        format!("t{}{suffix}", self.next_key)
    }

    /// Compiles a text template; answers the names it reads from outside.
    pub fn template(
        &mut self,
        source: &str,
        escaping: Escaping,
    ) -> Result<(TextTemplate, BTreeSet<String>), SyntaxProblem> {
        let key = self.next_key(match escaping {
            Escaping::Html => ".html",
            Escaping::None => ".txt",
        });
        self.env
            .add_template_owned(key.clone(), source.to_owned())
            .map_err(syntax_problem)?;
        let template = self.env.get_template(&key).map_err(syntax_problem)?;
        let names = outside_names(template.undeclared_variables(false));
        Ok((
            TextTemplate {
                source: source.to_owned(),
                key,
            },
            names,
        ))
    }

    /// Evaluates a condition; a missing value is false.
    pub fn eval(&self, condition: &Condition, context: &Value) -> Result<bool, EvalError> {
        let compiled = self
            .env
            .get_template(&condition.key)
            .map_err(|e| EvalError(e.to_string()))?;
        let rendered = compiled
            .render(context)
            .map_err(|e| EvalError(describe(&e)))?;
        Ok(rendered == "1")
    }

    /// Renders a template; a missing value is an error.
    pub fn render(&self, template: &TextTemplate, context: &Value) -> Result<String, EvalError> {
        let compiled = self
            .env
            .get_template(&template.key)
            .map_err(|e| EvalError(e.to_string()))?;
        compiled
            .render(context)
            .map_err(|e| EvalError(describe(&e)))
    }
}

fn outside_names(names: std::collections::HashSet<String>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter(|n| !BUILTIN_NAMES.contains(&n.as_str()))
        .collect()
}

fn syntax_problem(err: minijinja::Error) -> SyntaxProblem {
    SyntaxProblem {
        message: err.detail().unwrap_or("syntax error").to_owned(),
        offset: err.range().map(|r| r.start),
    }
}

/// The user fields an expression reads (`record.X` or `KIND.X`), or `None`
/// when it reads anything else in scope.
pub fn fields_read<'s>(source: &'s str, kind: &str) -> Option<Vec<&'s str>> {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut fields = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b if ident(b) && (i == 0 || bytes[i - 1] != b'.') => {
                let start = i;
                while i < bytes.len() && ident(bytes[i]) {
                    i += 1;
                }
                let word = &source[start..i];
                let is_root = matches!(word, "record" | "event" | "owner" | "now") || word == kind;
                if !is_root {
                    continue;
                }
                let field_start = i + 1;
                let mut end = field_start;
                while end < bytes.len() && ident(bytes[end]) {
                    end += 1;
                }
                let field = source
                    .get(field_start..end)
                    .filter(|_| bytes.get(i) == Some(&b'.'));
                match field {
                    Some(f) if word == "record" || word == kind => {
                        if crate::config::compile::KEPT_FIELDS.contains(&f) || f == "owner" {
                            return None;
                        }
                        fields.push(f);
                    }
                    _ => return None,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    Some(fields)
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn conditions_report_outside_names() {
        let mut ex = Expressions::default();
        let (_, names) = ex.condition("lead.score >= 50 and x in [1, 2]").unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["lead", "x"]);
    }

    #[test]
    fn attribute_conditions_know_the_fields_they_read() {
        assert_eq!(
            fields_read(
                "lead.title is defined and ('VP' in lead.title or record.seniority == \"x.y\")",
                "lead"
            ),
            Some(vec!["title", "title", "seniority"])
        );
        assert_eq!(
            fields_read("lead.stage == 'mql'", "lead"),
            None,
            "kept fields change by themselves"
        );
        assert_eq!(fields_read("event.path == '/pricing'", "lead"), None);
        assert_eq!(fields_read("now > lead.trial_ends", "lead"), None);
        assert_eq!(fields_read("'lead.x' == 'now'", "lead"), Some(vec![]));
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let mut ex = Expressions::default();
        let err = ex.condition("lead.score >= ").unwrap_err();
        assert!(err.offset.is_some(), "{err:?}");
    }

    #[test]
    fn missing_is_false_in_conditions_and_an_error_when_rendered() {
        let mut ex = Expressions::default();
        let ctx = context! { lead => context! { name => "Pat" } };
        let (c, _) = ex.condition("lead.vip").unwrap();
        assert!(!ex.eval(&c, &ctx).unwrap());
        let (t, _) = ex
            .template("Hi {{ lead.first_name }}", Escaping::None)
            .unwrap();
        assert!(ex.render(&t, &ctx).is_err());
        let (t, _) = ex
            .template(
                "Hi {{ lead.first_name | default('there') }}",
                Escaping::None,
            )
            .unwrap();
        assert_eq!(ex.render(&t, &ctx).unwrap(), "Hi there");
    }

    #[test]
    fn html_templates_escape_values() {
        let mut ex = Expressions::default();
        let (t, _) = ex.template("<p>{{ n }}</p>", Escaping::Html).unwrap();
        let out = ex.render(&t, &context! { n => "<b>" }).unwrap();
        assert_eq!(out, "<p>&lt;b&gt;</p>");
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let mut ex = Expressions::default();
        let (t, _) = ex
            .template(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                Escaping::None,
            )
            .unwrap();
        assert!(ex.render(&t, &context! {}).is_err());
    }
}
