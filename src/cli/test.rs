//! `dealflow test`: runs the `tests:` cases of a workflow folder on the
//! virtual clock; exit 1 with what differed when any fails.

use super::load_workflows;
use crate::simulation::workflow_test;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Runs every test and prints one line each, with the differences of failures.
pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let workflows = load_workflows(dir)?;
    if workflows.tests.is_empty() {
        println!(
            "No tests in {}: add a `tests:` section to a workflow file (see docs/workflows.md#tests).",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the runtime")?;
    let outcomes = runtime.block_on(workflow_test::run_all(&workflows))?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    for outcome in &outcomes {
        if outcome.passed() {
            println!("ok    {}", outcome.name);
        } else {
            println!("FAIL  {}", outcome.name);
            for failure in &outcome.failures {
                println!("    {failure}");
            }
        }
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
