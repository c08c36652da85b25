//! Problems found in a workflow folder, each pointing at `file:line:col`.
//!
//! Every stage of loading (reading files, parsing YAML, checking names and
//! expressions) pushes into one [`Diagnostics`] list, so a user sees every
//! problem of the whole folder in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

/// How serious a problem is: errors refuse the folder, warnings only inform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The folder cannot run until this is fixed.
    Error,
    /// Likely a mistake, but the folder still runs.
    Warning,
}

/// A place in a workflow file; line and column start at 1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    /// The file, relative to the workflow folder.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column; 0 when the problem concerns the whole file.
    pub column: u64,
}

impl Position {
    /// A position inside `file`.
    pub fn new(file: impl Into<PathBuf>, line: u64, column: u64) -> Self {
        Position {
            file: file.into(),
            line,
            column,
        }
    }

    /// The start of `file`, for problems that concern the whole file.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Position::new(file, 1, 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// What kind of problem a diagnostic is. A message may be reworded from
/// one version to the next; a code never is, so scripts, editors and CI
/// filters can rely on it, and docs/workflows.md explains each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The folder is missing, or holds no workflow files.
    Folder,
    /// A file cannot be read as UTF-8 text (unreadable, empty, too large, binary).
    File,
    /// Not YAML of the expected shape: syntax, indentation, an unknown,
    /// repeated or missing key, a value of the wrong type.
    Yaml,
    /// An environment variable is not set, or a secret taken from one is empty.
    Env,
    /// A value that is not what its field takes: a duration, cron line,
    /// time zone, number, URL, address, phone number, method, header name.
    Value,
    /// An expression or template that does not compile.
    Expression,
    /// A name nothing defines: a stage, sequence, template, model, team,
    /// source, step or a name inside an expression.
    UnknownName,
    /// A name defined twice (or settings given in two files).
    Duplicate,
    /// A name or event type that is not allowed: spaces, control
    /// characters, a reserved name, a field dealflow keeps, an event
    /// dealflow raises itself.
    Name,
    /// A required part is missing.
    Missing,
    /// Parts that cannot go together, or a part that does not apply where
    /// it is written.
    Conflict,
    /// An item used for a record kind it is not for, or a kind given two
    /// pipelines.
    Kind,
    /// Defined but never used.
    Unused,
    /// Something that can never have an effect as written.
    NoEffect,
    /// An event type no built-in event has: only a sender outside dealflow
    /// can raise it.
    UnknownEvent,
    /// Passwords, mail or events that would travel or arrive unprotected.
    Insecure,
    /// What emails to prospects must carry (unsubscribe links that reach,
    /// the sender's postal address) is not set.
    Compliance,
    /// A text long enough to be billed and delivered as several.
    LongText,
    /// A workflow test that cannot run as written.
    Test,
    /// A dealflow bug: please report it with the folder.
    Internal,
}

impl Code {
    /// Every code, in the order docs list them.
    pub const ALL: [Code; 20] = [
        Code::Folder,
        Code::File,
        Code::Yaml,
        Code::Env,
        Code::Value,
        Code::Expression,
        Code::UnknownName,
        Code::Duplicate,
        Code::Name,
        Code::Missing,
        Code::Conflict,
        Code::Kind,
        Code::Unused,
        Code::NoEffect,
        Code::UnknownEvent,
        Code::Insecure,
        Code::Compliance,
        Code::LongText,
        Code::Test,
        Code::Internal,
    ];

    /// The code as shown and serialized.
    pub fn name(self) -> &'static str {
        match self {
            Code::Folder => "folder",
            Code::File => "file",
            Code::Yaml => "yaml",
            Code::Env => "env",
            Code::Value => "value",
            Code::Expression => "expression",
            Code::UnknownName => "unknown-name",
            Code::Duplicate => "duplicate",
            Code::Name => "name",
            Code::Missing => "missing",
            Code::Conflict => "conflict",
            Code::Kind => "kind",
            Code::Unused => "unused",
            Code::NoEffect => "no-effect",
            Code::UnknownEvent => "unknown-event",
            Code::Insecure => "insecure",
            Code::Compliance => "compliance",
            Code::LongText => "long-text",
            Code::Test => "test",
            Code::Internal => "internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem: where, how serious, what kind, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Where the problem is.
    pub position: Position,
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem it is (stable across versions).
    pub code: Code,
    /// A sentence saying what is wrong and, where possible, how to fix it.
    pub message: String,
}

/// `file:line:col: message [code]`; the code last, so the place and the
/// sentence read as before and a script can still take the code.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (position, message, code) = (&self.position, &self.message, self.code);
        match self.severity {
            Severity::Error => write!(f, "{position}: {message} [{code}]"),
            Severity::Warning => write!(f, "{position}: warning: {message} [{code}]"),
        }
    }
}

/// The problems of one load, kept in the order files and values were read.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error.
    pub fn error(&mut self, position: Position, code: Code, message: impl Into<String>) {
        self.push(position, Severity::Error, code, message.into());
    }

    /// Records a warning.
    pub fn warning(&mut self, position: Position, code: Code, message: impl Into<String>) {
        self.push(position, Severity::Warning, code, message.into());
    }

    fn push(&mut self, position: Position, severity: Severity, code: Code, message: String) {
        self.items.push(Diagnostic {
            position,
            severity,
            code,
            message,
        });
    }

    /// Whether any error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// All problems, sorted by file, line and column so output is stable.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (&a.position, a.severity, &a.message).cmp(&(&b.position, b.severity, &b.message))
        });
        self.items.dedup();
        self.items
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Shows `path` relative to `root` when it lies below it.
pub fn relative_to(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

/// The closest of `candidates` to `unknown`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// ` did you mean "x"?` or nothing.
pub fn suggestion<'a>(unknown: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(unknown, candidates) {
        Some(c) => format!(", did you mean \"{c}\"?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("exit_onn", ["exit_on", "steps"]),
            Some("exit_on")
        );
        assert_eq!(did_you_mean("zzz", ["exit_on", "steps"]), None);
    }

    #[test]
    fn sorts_by_position() {
        let mut d = Diagnostics::default();
        d.error(Position::new("b.yaml", 1, 1), Code::Value, "late");
        d.warning(Position::new("a.yaml", 9, 1), Code::Unused, "early");
        let out: Vec<String> = d.sorted().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            out,
            [
                "a.yaml:9:1: warning: early [unused]",
                "b.yaml:1:1: late [value]"
            ]
        );
    }

    #[test]
    fn every_code_has_its_own_name() {
        let names: std::collections::BTreeSet<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Code::ALL.len());
        for code in Code::ALL {
            let serialized = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(serialized, code.name(), "{code:?}");
        }
    }
}
