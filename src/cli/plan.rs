//! `dealflow plan [DIR]`: what reloading DIR would change in the running
//! daemon, and whether it would be refused. The daemon compiles the folder
//! and plans it against its running set and store: the same plan a reload
//! applies, as a dry run.

use super::client::{Daemon, Refused};
use crate::config::diagnostic::{Diagnostics, relative_to};
use crate::config::loader::workflow_paths;
use anyhow::Context;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::ExitCode;

/// Prints the plan; exit 1 when the reload would fail or be refused.
pub fn run(dir: &Path, daemon: &Daemon) -> anyhow::Result<ExitCode> {
    let files = match folder_files(dir) {
        Ok(files) => files,
        Err(problems) => {
            println!("The reload would fail: {problems}");
            return Ok(ExitCode::from(1));
        }
    };
    let answer = match daemon.post("/v1/plan", &json!({ "files": files })) {
        Ok(answer) => answer,
        Err(e)
            if e.downcast_ref::<Refused>()
                .is_some_and(|r| r.status == reqwest::StatusCode::UNPROCESSABLE_ENTITY) =>
        {
            println!("The reload would fail: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e),
    };
    let text = answer["text"]
        .as_str()
        .context("the daemon's answer holds no plan")?;
    println!("{text}");
    Ok(if answer["refused"].as_bool().unwrap_or(true) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The folder's workflow and template files, by path relative to it.
fn folder_files(dir: &Path) -> Result<Map<String, Value>, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let mut diags = Diagnostics::default();
    let paths = workflow_paths(dir, &mut diags);
    if diags.has_errors() {
        let lines: Vec<String> = diags.sorted().iter().map(|d| d.to_string()).collect();
        return Err(lines.join("\n"));
    }
    let mut files = Map::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let relative: Vec<String> = relative_to(dir, &path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        files.insert(relative.join("/"), Value::String(text));
    }
    Ok(files)
}
