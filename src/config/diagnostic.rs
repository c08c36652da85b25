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

/// One problem: where, how serious, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Where the problem is.
    pub position: Position,
    /// Error or warning.
    pub severity: Severity,
    /// A sentence saying what is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.position, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.position, self.message),
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
    pub fn error(&mut self, position: Position, message: impl Into<String>) {
        self.push(position, Severity::Error, message.into());
    }

    /// Records a warning.
    pub fn warning(&mut self, position: Position, message: impl Into<String>) {
        self.push(position, Severity::Warning, message.into());
    }

    fn push(&mut self, position: Position, severity: Severity, message: String) {
        self.items.push(Diagnostic {
            position,
            severity,
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
        d.error(Position::new("b.yaml", 1, 1), "late");
        d.warning(Position::new("a.yaml", 9, 1), "early");
        let out: Vec<String> = d.sorted().iter().map(|d| d.to_string()).collect();
        assert_eq!(out, ["a.yaml:9:1: warning: early", "b.yaml:1:1: late"]);
    }
}
