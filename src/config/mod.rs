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
pub mod loader;
pub mod model;
pub mod values;
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
