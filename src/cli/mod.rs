//! The `dealflow` command line: argument parsing and one file per command.
//! Commands only wire library parts together; the work lives in the library.

mod client;
mod init;
mod run;
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
    /// Run the daemon: receive events, run the workflows, serve the API.
    Run {
        /// The workflow folder.
        #[arg(long, default_value = "workflows")]
        workflows: PathBuf,
        /// Where the store lives.
        #[arg(long, default_value = "var")]
        data: PathBuf,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = crate::api::DEFAULT_MAX_BODY)]
        max_body: usize,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Post one event to a running daemon.
    Emit {
        /// Event type, e.g. form.submitted.
        event_type: String,
        /// The record, KIND/ID.
        #[arg(long)]
        record: String,
        /// A field to merge into the record, NAME=VALUE (repeatable).
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Idempotency key (default: none, never deduplicated).
        #[arg(long)]
        id: Option<String>,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// List open tasks of a running daemon.
    Tasks {
        /// Only this person's.
        #[arg(long)]
        owner: Option<String>,
        /// Only tasks nobody owns.
        #[arg(long)]
        unassigned: bool,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command line; the answer is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, format } => validate::run(&dir, format),
        Command::Schema => schema::run(),
        Command::Init { dir } => init::run(&dir),
        Command::Run {
            workflows,
            data,
            listen,
            max_body,
            log_format,
        } => {
            init_logging(log_format);
            run::run(run::RunOptions {
                workflows: &workflows,
                data: &data,
                listen,
                max_body,
            })
        }
        Command::Emit {
            event_type,
            record,
            fields,
            id,
            url,
        } => client::emit(
            &client::Daemon::from_env(url),
            &event_type,
            &record,
            &fields,
            id,
        ),
        Command::Tasks {
            owner,
            unassigned,
            url,
        } => client::tasks(&client::Daemon::from_env(url), owner, unassigned),
    }
}
