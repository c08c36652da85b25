//! The `dealflow` binary: parses the command line and reports errors.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = dealflow::cli::Cli::parse();
    match dealflow::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
