//! The compiler's working state: where it is, what it found, and the
//! checks every section shares (durations, names in scope, expressions).

use crate::config::diagnostic::Code;
use crate::config::diagnostic::{Diagnostics, Position, suggestion};
use crate::config::environment::Secrets;
use crate::config::expr::{
    Condition, Escaping, Expressions, SyntaxProblem, TextTemplate, ValueExpr,
};
use crate::config::model::Located;
use crate::config::values;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which names an expression may read (SPEC §7 "Names in expressions").
#[derive(Debug, Clone)]
pub struct Scope {
    names: BTreeSet<String>,
    /// Any name is accepted: the scope's names come from files that could
    /// not be read, so an unknown name may well be defined there.
    open: bool,
}

impl Scope {
    /// Scope of a rule, sequence, pipeline or model: `record`, `event`,
    /// `owner`, `now`, and the kind's own name when `for:` gives one.
    pub fn record(kind: Option<&str>) -> Scope {
        let mut names: BTreeSet<String> = ["record", "event", "owner", "now"]
            .into_iter()
            .map(String::from)
            .collect();
        names.extend(kind.map(String::from));
        Scope { names, open: false }
    }

    /// Scope of a schedule rule without `for_each`: there is no record.
    pub fn no_record() -> Scope {
        Scope {
            names: ["event", "now"].into_iter().map(String::from).collect(),
            open: false,
        }
    }

    /// Scope of a source's mapping: the payload, its headers and `now`,
    /// and `item` under `for_each`.
    pub fn source(for_each: bool) -> Scope {
        let mut names: BTreeSet<String> = ["payload", "headers", "now"]
            .into_iter()
            .map(String::from)
            .collect();
        if for_each {
            names.insert("item".to_owned());
        }
        Scope { names, open: false }
    }

    /// This scope accepting every name, when `unsure` (see `open`).
    pub fn open_when(mut self, unsure: bool) -> Scope {
        self.open = unsure;
        self
    }

    /// This scope plus more names.
    pub fn with(mut self, extra: impl IntoIterator<Item = String>) -> Scope {
        self.names.extend(extra);
        self
    }

    /// Whether a record is in scope.
    pub fn has_record(&self) -> bool {
        self.names.contains("record")
    }
}

/// Compiler state shared by every section.
pub struct Cx<'a> {
    diags: &'a mut Diagnostics,
    secrets: &'a Secrets,
    exprs: Expressions,
    file: PathBuf,
    text: String,
}

impl<'a> Cx<'a> {
    /// A compiler writing to `diags`, masking `secrets` in every message.
    pub fn new(diags: &'a mut Diagnostics, secrets: &'a Secrets) -> Self {
        Cx {
            diags,
            secrets,
            exprs: Expressions::default(),
            file: PathBuf::new(),
            text: String::new(),
        }
    }

    /// Positions from now on are in this file.
    pub fn enter_file(&mut self, path: &Path, text: &str) {
        self.file = path.to_path_buf();
        self.text = text.to_owned();
    }

    /// The position of a value in the current file.
    pub fn at<T>(&self, value: &Located<T>) -> Position {
        let (line, column) = value.line_col();
        Position::new(&self.file, line, column)
    }

    /// Records an error at a value.
    pub fn error<T>(&mut self, value: &Located<T>, code: Code, message: impl Into<String>) {
        let at = self.at(value);
        self.error_at(at, code, message);
    }

    /// Records an error at a position.
    pub fn error_at(&mut self, at: Position, code: Code, message: impl Into<String>) {
        let message = self.secrets.redact(&message.into());
        self.diags.error(at, code, message);
    }

    /// Records a warning at a value.
    pub fn warning<T>(&mut self, value: &Located<T>, code: Code, message: impl Into<String>) {
        let at = self.at(value);
        self.warning_at(at, code, message);
    }

    /// Records a warning at a position.
    pub fn warning_at(&mut self, at: Position, code: Code, message: impl Into<String>) {
        let message = self.secrets.redact(&message.into());
        self.diags.warning(at, code, message);
    }

    /// Parses a duration, reporting a bad one.
    pub fn duration(&mut self, text: &Located<String>) -> Option<Duration> {
        self.parsed(text, values::parse_duration)
    }

    /// Parses a duration that must be longer than zero.
    pub fn positive_duration(&mut self, text: &Located<String>, what: &str) -> Option<Duration> {
        let d = self.duration(text)?;
        if d.is_zero() {
            self.error(text, Code::Value, format!("{what} must be longer than 0s"));
            return None;
        }
        Some(d)
    }

    /// Runs a value parser, reporting its message at the value.
    pub fn parsed<T>(
        &mut self,
        text: &Located<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(text.get()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(text, Code::Value, message);
                None
            }
        }
    }

    /// Compiles a condition and checks the names it reads.
    pub fn condition(&mut self, text: &Located<String>, scope: &Scope) -> Option<Condition> {
        match self.exprs.condition(text.get()) {
            Ok((condition, names)) => self
                .names_in_scope(text, &names, scope)
                .then_some(condition),
            Err(problem) => {
                self.syntax_error(text, "expression", &problem);
                None
            }
        }
    }

    /// Compiles an expression whose value is kept as JSON and checks the
    /// names it reads. `source` is the expression inside `text`.
    pub fn value_expr(
        &mut self,
        text: &Located<String>,
        source: &str,
        scope: &Scope,
    ) -> Option<ValueExpr> {
        match self.exprs.value(source) {
            Ok((expr, names)) => self.names_in_scope(text, &names, scope).then_some(expr),
            Err(problem) => {
                let offset = text.get().find(source).unwrap_or(0);
                let problem = SyntaxProblem {
                    offset: problem.offset.map(|o| o + offset),
                    ..problem
                };
                self.syntax_error(text, "expression", &problem);
                None
            }
        }
    }

    /// Compiles a text template and checks the names it reads.
    pub fn template(
        &mut self,
        text: &Located<String>,
        scope: &Scope,
        escaping: Escaping,
    ) -> Option<TextTemplate> {
        match self.exprs.template(text.get(), escaping) {
            Ok((template, names)) => {
                let origin = self.position_inside(text, Some(0));
                self.names_in_scope(text, &names, scope)
                    .then(|| template.at(origin))
            }
            Err(problem) => {
                self.syntax_error(text, "template", &problem);
                None
            }
        }
    }

    /// Compiles a template read from a template file, whose positions are
    /// lines of that file rather than a YAML value.
    pub fn file_template(
        &mut self,
        source: &str,
        first_line: u64,
        scope: &Scope,
        escaping: Escaping,
    ) -> Option<TextTemplate> {
        match self.exprs.template(source, escaping) {
            Ok((template, names)) => {
                let unknown = unknown_names(&names, scope);
                for name in &unknown {
                    let at = position_of_name(source, name, first_line, &self.file);
                    let hint = unknown_name_hint(name, scope);
                    self.error_at(
                        at,
                        Code::UnknownName,
                        format!("unknown name \"{name}\" in template{hint}"),
                    );
                }
                let origin = Position::new(&self.file, first_line, 1);
                unknown.is_empty().then(|| template.at(origin))
            }
            Err(problem) => {
                let (line, column) = problem.offset.map_or((0, 1), |o| line_col_in(source, o));
                let at = Position::new(&self.file, first_line + line, column);
                self.error_at(
                    at,
                    Code::Expression,
                    format!("template syntax error: {}", problem.message),
                );
                None
            }
        }
    }

    fn names_in_scope(
        &mut self,
        text: &Located<String>,
        names: &BTreeSet<String>,
        scope: &Scope,
    ) -> bool {
        let unknown = unknown_names(names, scope);
        for name in &unknown {
            let near = suggestion(name, scope.names.iter().map(String::as_str));
            let message = if near.is_empty() {
                let listed: Vec<&str> = scope.names.iter().map(String::as_str).collect();
                format!(
                    "unknown name \"{name}\"{}; in scope here: {}",
                    unknown_name_hint(name, scope),
                    listed.join(", ")
                )
            } else {
                format!("unknown name \"{name}\"{near}")
            };
            let at = self.position_inside(text, text.get().find(name.as_str()));
            self.error_at(at, Code::UnknownName, message);
        }
        unknown.is_empty()
    }

    fn syntax_error(&mut self, text: &Located<String>, what: &str, problem: &SyntaxProblem) {
        let at = self.position_inside(text, problem.offset);
        self.error_at(
            at,
            Code::Expression,
            format!("{what} syntax error: {}", problem.message),
        );
    }

    /// The position of byte `offset` of a value's text, when the value sits
    /// on one line of the file as written (plain or quoted); otherwise the
    /// value's own position.
    fn position_inside(&self, value: &Located<String>, offset: Option<usize>) -> Position {
        let start = self.at(value);
        let (Some(offset), Some(file_offset)) = (offset, value.byte_offset()) else {
            return start;
        };
        let Some(before) = value.get().get(..offset) else {
            return start;
        };
        let quoted = matches!(self.text.as_bytes().get(file_offset), Some(b'"' | b'\''));
        // The parser's offset is not always on a character boundary of the
        // text (a fuzzed file showed it), so the text is sliced with `get`:
        // an offset that does not fit gives the value's own position.
        let written = self.text.get(file_offset + usize::from(quoted)..);
        if before.contains('\n') || !written.is_some_and(|w| w.starts_with(before)) {
            return start;
        }
        Position::new(
            start.file,
            start.line,
            start.column + u64::from(quoted) + before.chars().count() as u64,
        )
    }

    /// Whether an error was recorded so far.
    pub fn failed(&self) -> bool {
        self.diags.has_errors()
    }

    /// Hands over the compiled expressions and whether any error was seen.
    pub fn finish(self) -> (Expressions, bool) {
        (self.exprs, self.diags.has_errors())
    }
}

fn unknown_names(names: &BTreeSet<String>, scope: &Scope) -> Vec<String> {
    if scope.open {
        return Vec::new();
    }
    names.difference(&scope.names).cloned().collect()
}

/// A near name in scope, else how a record kind's name comes into scope:
/// a newcomer's first template says `contact.name` in a rule without `for:`.
fn unknown_name_hint(name: &str, scope: &Scope) -> String {
    let near = suggestion(name, scope.names.iter().map(String::as_str));
    if !near.is_empty() {
        return near;
    }
    if scope.has_record() {
        format!(
            "; if \"{name}\" is a record kind, add `for: {name}` to the rule, sequence or model (or write record.…)"
        )
    } else {
        String::new()
    }
}

/// 1-based line (relative) and column of a byte offset in `text`.
fn line_col_in(text: &str, offset: usize) -> (u64, u64) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() as u64;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, column)
}

fn position_of_name(source: &str, name: &str, first_line: u64, file: &Path) -> Position {
    let (line, column) = source.find(name).map_or((0, 1), |o| line_col_in(source, o));
    Position::new(file, first_line + line, column)
}
