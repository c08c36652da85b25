//! `dealflow plan [DIR]`: what reloading DIR would change in the running
//! daemon, and whether it would be refused.

use super::client::Daemon;
use super::load_workflows;
use crate::reload::plan::{Summary, compare};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Prints the plan; exit 1 when the reload would fail or be refused.
pub fn run(dir: &Path, daemon: &Daemon) -> anyhow::Result<ExitCode> {
    let new = match load_workflows(dir) {
        Ok(w) => w,
        Err(e) => {
            println!("The reload would fail: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let running: Summary = serde_json::from_value(daemon.get("/v1/workflows")?)
        .context("the daemon's answer is not a workflow summary")?;
    let plan = compare(&running, &new);
    println!("{}", plan.text);
    Ok(if plan.refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
