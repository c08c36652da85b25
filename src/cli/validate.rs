//! `dealflow validate [DIR]`.

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::environment::ProcessEnvironment;
use crate::config::{self, Workflows};
use std::path::Path;
use std::process::ExitCode;

/// How problems are printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// `file:line:col: message`, one per line.
    Text,
    /// One JSON object per line.
    Json,
}

/// Prints every problem; exit 1 if any is an error.
pub fn run(dir: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let (workflows, diagnostics) = config::load(dir, &ProcessEnvironment);
    for d in &diagnostics {
        let shown = Diagnostic {
            position: config::diagnostic::Position {
                file: shown_path(dir, &d.position.file),
                ..d.position.clone()
            },
            ..d.clone()
        };
        match format {
            Format::Text => println!("{shown}"),
            Format::Json => println!("{}", serde_json::to_string(&shown)?),
        }
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    match (&workflows, format) {
        (Some(w), Format::Text) => println!("{}", summary(w, warnings)),
        (None, Format::Text) => println!("{errors} error(s), {warnings} warning(s)"),
        (_, Format::Json) => {}
    }
    Ok(if workflows.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The path a user can open from where they ran the command.
fn shown_path(dir: &Path, file: &Path) -> std::path::PathBuf {
    if file.as_os_str().is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(file)
    }
}

fn summary(w: &Workflows, warnings: usize) -> String {
    // Named only when there are some, so folders without any read as before.
    let sources = match w.sources.len() {
        0 => String::new(),
        n => format!(", {n} sources"),
    };
    format!(
        "ok: {} rules, {} sequences, {} pipelines, {} scoring models, {} templates{sources}, {} tests in {} files (version {}); {warnings} warning(s)",
        w.rules.len(),
        w.sequences.len(),
        w.pipelines.len(),
        w.scoring.len(),
        w.templates.len(),
        w.tests.len(),
        w.files.len(),
        w.version,
    )
}
