//! Expressions (`if:`) and text templates (`{{ ... }}`), both minijinja.
//!
//! Everything is compiled when the folder loads, so syntax errors and
//! unknown names are validation errors with positions. Evaluation is bounded
//! by fuel (no runaway loops) and uses semi-strict undefined values: a
//! missing field is falsy in a condition but an error when rendered, so no
//! email goes out as "Hi ,".

use super::diagnostic::{Position, suggestion};
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
    /// Where its first character is in the workflow folder, so an error at
    /// run time can point at the line a user edits.
    origin: Option<Position>,
}

/// A compiled expression whose value is kept as JSON (a source's
/// `for_each`, and a field that is one `{{ ... }}`), stored as a template
/// rendering the value with `tojson`.
#[derive(Clone)]
pub struct ValueExpr {
    /// The expression as written.
    pub source: String,
    key: String,
}

impl std::fmt::Debug for ValueExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ValueExpr").field(&self.source).finish()
    }
}

/// The expression of a text that is exactly one `{{ ... }}`, if it is.
pub fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let whole = !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%");
    let inner = inner.trim();
    (whole && !inner.is_empty() && !inner.starts_with('-')).then_some(inner)
}

impl TextTemplate {
    /// This template, remembered as starting at `origin`.
    pub fn at(mut self, origin: Position) -> Self {
        self.origin = Some(origin);
        self
    }

    /// `file:line:col` of byte `offset` of the source, when known. Lines
    /// after the first are counted from the origin's line (exact for
    /// template files; a block scalar's first line is the one after it).
    fn position_of(&self, offset: usize) -> Option<Position> {
        let origin = self.origin.as_ref()?;
        let before = self.source.get(..offset)?;
        let line = before.matches('\n').count() as u64;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64;
        let column = if line == 0 {
            origin.column + column
        } else {
            column + 1
        };
        Some(Position::new(&origin.file, origin.line + line, column))
    }
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

// Shown and compared by source only: the storage key depends on what was
// compiled before, and where a template starts is not what it does, so two
// compilations of the same text are equal (`dealflow plan` compares items
// of two compiled sets).
impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl PartialEq for TextTemplate {
    fn eq(&self, other: &Self) -> bool {
        // The key's extension is how the text is escaped.
        let escaped = |t: &TextTemplate| t.key.ends_with(".html");
        self.source == other.source && escaped(self) == escaped(other)
    }
}

impl PartialEq for ValueExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

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
        let (key, names) = self.expression(source, ".cond", |source| {
            format!("{{% if ({source}\n) %}}1{{% endif %}}")
        })?;
        let source = source.to_owned();
        Ok((Condition { source, key }, names))
    }

    /// Compiles an expression whose value is wanted as JSON; answers the
    /// names it reads from outside.
    pub fn value(&mut self, source: &str) -> Result<(ValueExpr, BTreeSet<String>), SyntaxProblem> {
        // `tojson` writes a missing value as null; rendering the expression
        // itself instead makes that the error naming what is missing.
        let (key, names) = self.expression(source, ".value", |source| {
            format!(
                "{{% set value = ({source}\n) %}}{{% if value is undefined %}}{{{{ {source}\n }}}}{{% else %}}{{{{ value | tojson }}}}{{% endif %}}"
            )
        })?;
        let source = source.to_owned();
        Ok((ValueExpr { source, key }, names))
    }

    /// Compiles an expression, stored as the template `wrap` makes of it;
    /// answers its key and the names it reads from outside. Compiled as an
    /// expression first, so errors point into the source as written; the
    /// wrapping template cannot fail after that.
    fn expression(
        &mut self,
        source: &str,
        suffix: &str,
        wrap: impl FnOnce(&str) -> String,
    ) -> Result<(String, BTreeSet<String>), SyntaxProblem> {
        let expr = self
            .env
            .compile_expression(source)
            .map_err(syntax_problem)?;
        let names = outside_names(expr.undeclared_variables(false));
        self.known_filters(source, Syntax::Expression)?;
        let key = self.next_key(suffix);
        self.env
            .add_template_owned(key.clone(), wrap(source))
            .map_err(syntax_problem)?;
        Ok((key, names))
    }

    /// Refuses a filter minijinja does not have: it compiles, and only
    /// fails when rendered, which would be in production (`| titlecase`).
    fn known_filters(&self, source: &str, syntax: Syntax) -> Result<(), SyntaxProblem> {
        for (offset, name) in filters_used(source, syntax) {
            let probe = format!("{{{{ none | {name} }}}}");
            let unknown = matches!(
                self.env.render_str(&probe, ()),
                Err(e) if e.kind() == minijinja::ErrorKind::UnknownFilter
            );
            if unknown {
                let hint = suggestion(name, COMMON_FILTERS.iter().copied());
                return Err(SyntaxProblem {
                    message: format!("unknown filter \"{name}\"{hint}"),
                    offset: Some(offset),
                });
            }
        }
        Ok(())
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
        self.known_filters(source, Syntax::Template)?;
        Ok((
            TextTemplate {
                source: source.to_owned(),
                key,
                origin: None,
            },
            names,
        ))
    }

    /// Evaluates a value expression to JSON; a missing value is an error.
    pub fn value_of(
        &self,
        expr: &ValueExpr,
        context: &Value,
    ) -> Result<serde_json::Value, EvalError> {
        let compiled = self
            .env
            .get_template(&expr.key)
            .map_err(|e| EvalError(e.to_string()))?;
        let rendered = compiled
            .render(context)
            .map_err(|e| EvalError(describe(&e)))?;
        serde_json::from_str(&rendered).map_err(|e| {
            EvalError(format!(
                "`{}` gave a value that is not JSON: {e}",
                expr.source
            ))
        })
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
            .map_err(|e| EvalError(describe_in(&e, template)))
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
                        if crate::state::KEPT_FIELDS.contains(&f) || f == "owner" {
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

/// Whether a source is a whole expression (`if:`) or text with `{{ }}` and
/// `{% %}` blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Expression,
    Template,
}

/// minijinja's filters, for "did you mean" (the check itself asks minijinja).
const COMMON_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];

/// Each filter name after a `|` in the expression parts of `source`, with
/// its byte offset; string literals are skipped.
fn filters_used(source: &str, syntax: Syntax) -> Vec<(usize, &str)> {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut in_code = syntax == Syntax::Expression;
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes.get(i..i + 2);
        match bytes[i] {
            _ if !in_code && matches!(pair, Some(b"{{" | b"{%")) => {
                in_code = true;
                i += 2;
            }
            _ if in_code && syntax == Syntax::Template && matches!(pair, Some(b"}}" | b"%}")) => {
                in_code = false;
                i += 2;
            }
            quote @ (b'\'' | b'"') if in_code => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'|' if in_code => {
                let start = i
                    + 1
                    + bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_whitespace())
                        .count();
                let end = start + bytes[start..].iter().take_while(|b| ident(**b)).count();
                if end > start {
                    found.push((start, &source[start..end]));
                }
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    found
}

/// A render error that names what failed (`lead.first_name`) and where
/// the template says it: an undefined value is the usual one, and the fix is
/// in the workflow file.
fn describe_in(err: &minijinja::Error, template: &TextTemplate) -> String {
    let described = describe(err);
    let Some(range) = err.range() else {
        return described;
    };
    let what = template.source.get(range.clone()).unwrap_or("").trim();
    let at = template
        .position_of(range.start)
        .map(|p| format!(" at {p}"))
        .unwrap_or_default();
    let hint = if err.kind() == minijinja::ErrorKind::UndefinedError {
        "; write `| default(...)` where it may be missing"
    } else {
        ""
    };
    if what.is_empty() {
        format!("{described}{at}{hint}")
    } else {
        format!("{described} in `{what}`{at}{hint}")
    }
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
    fn unknown_filters_are_refused_when_compiled() {
        let mut ex = Expressions::default();
        let err = ex
            .template("Hi {{ lead.name | titlecase }}", Escaping::None)
            .err()
            .unwrap();
        assert!(
            err.message.contains("unknown filter \"titlecase\""),
            "{}",
            err.message
        );
        assert_eq!(err.offset, Some(18));
        let err = ex.condition("lead.name | upperr == 'X'").err().unwrap();
        assert!(
            err.message.contains("did you mean \"upper\""),
            "{}",
            err.message
        );
        assert!(
            ex.template(
                "{{ a | default('x | y') | upper }} | not a filter",
                Escaping::None
            )
            .is_ok()
        );
        assert!(ex.condition("lead.tags | length > 0").is_ok());
    }

    #[test]
    fn render_errors_name_the_value_and_where_it_is_written() {
        let mut ex = Expressions::default();
        let (t, _) = ex
            .template("Hi\n{{ lead.first_name }}!", Escaping::None)
            .unwrap();
        let t = t.at(Position::new("templates/intro.md", 4, 1));
        let err = ex
            .render(&t, &context! { lead => context! {} })
            .unwrap_err();
        assert!(err.0.contains("`lead.first_name`"), "{}", err.0);
        assert!(err.0.contains("templates/intro.md:5:"), "{}", err.0);
    }

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
