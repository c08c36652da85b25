//! Reading and compiling a workflow folder (SPEC §3, §7).
//!
//! `load` is the one path used by `validate`, by startup and by hot reload:
//! read every file ([`loader`]), check and compile everything ([`compile`]),
//! and answer either an immutable [`Workflows`] or every problem found.
//! This module never runs anything and never writes anywhere.

pub mod compile;
pub mod diagnostic;
pub mod environment;
pub mod expr;
pub mod interpolation;
pub mod loader;
pub mod model;
pub mod send_window;
pub mod values;
pub mod webhook_hosts;
pub mod workflows;

pub use workflows::Workflows;

use diagnostic::Diagnostics;
use environment::Environment;
use std::path::Path;

/// Loads and compiles the workflow folder at `dir`: the one function behind
/// `validate`, startup and reload. Answers the compiled set (when there was
/// no error) and every problem found, errors and warnings, sorted.
pub fn load(dir: &Path, env: &dyn Environment) -> (Option<Workflows>, Vec<diagnostic::Diagnostic>) {
    let mut diags = Diagnostics::default();
    let set = loader::read_folder(dir, env, &mut diags);
    let workflows = compile::compile(set, &mut diags);
    let workflows = workflows.filter(|_| !diags.has_errors());
    (workflows, diags.sorted())
}

/// Compiles one YAML text as a workflow folder of one file; panics with
/// the diagnostics when it does not compile (tests only).
#[cfg(test)]
pub fn load_for_tests(yaml: &str) -> Workflows {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let (w, d) = load(dir.path(), &std::collections::HashMap::new());
    w.unwrap_or_else(|| panic!("{d:#?}"))
}
