//! The `dealflow` command line: argument parsing and one file per command.
//! Commands only wire library parts together; the work lives in the library.

mod init;
mod schema;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// dealflow runs a sales team's workflow from a folder of YAML files.
#[derive(Debug, Parser)]
#[command(name = "dealflow", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check a workflow folder; print every problem as file:line:col.
    Validate {
        /// The workflow folder.
        #[arg(default_value = "workflows")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = validate::Format::Text)]
        format: validate::Format,
    },
    /// Print the JSON Schema of workflow files (for editor completion).
    Schema,
    /// Write a small working workflow folder to start from.
    Init {
        /// Folder to create.
        dir: PathBuf,
    },
}

/// Runs a parsed command line; the answer is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, format } => validate::run(&dir, format),
        Command::Schema => schema::run(),
        Command::Init { dir } => init::run(&dir),
    }
}
