//! `dealflow schema`: the JSON Schema of workflow files, derived from the
//! same types the loader parses, so editors and dealflow always agree.

use crate::config::model::WorkflowFile;
use std::process::ExitCode;

/// Prints the schema.
pub fn run() -> anyhow::Result<ExitCode> {
    println!("{}", schema_json()?);
    Ok(ExitCode::SUCCESS)
}

/// The schema as pretty JSON.
pub fn schema_json() -> serde_json::Result<String> {
    let schema = schemars::schema_for!(WorkflowFile);
    serde_json::to_string_pretty(&schema)
}
