//! The `dealflow` command line: argument parsing and one file per command.
//! Commands only wire library parts together; the work lives in the library.
//!
//! Owns: arguments, exit codes, terminal output. Never: holds logic a
//! daemon or a test would need (it could not reach it here).

mod background;
mod client;
mod init;
mod operations;
mod plan;
mod run;
mod schema;
mod simulate;
mod test;
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
        /// The store's block cache in MiB.
        #[arg(long, default_value_t = crate::store::DEFAULT_CACHE_MIB)]
        store_cache_mib: u64,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Longest wait for a request's headers, and for its body: a client
        /// that sends half a request is cut off after it.
        #[arg(long, default_value = "30s")]
        read_timeout: String,
    },
    /// Run the workflows on a virtual clock over events from a file and
    /// print the dated timeline; nothing is sent.
    Simulate {
        /// The workflow folder.
        #[arg(long, default_value = "workflows")]
        workflows: PathBuf,
        /// Events, one JSON object per line, each with an optional `at: "+4d"`.
        #[arg(long)]
        events: PathBuf,
        /// Start of the virtual clock: a date (2026-03-02, midnight UTC) or
        /// an RFC 3339 time (default: now).
        #[arg(long)]
        start: Option<String>,
        /// How long to run.
        #[arg(long, default_value = "30d")]
        until: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = simulate::Format::Text)]
        format: simulate::Format,
    },
    /// Run the `tests:` cases of a workflow folder; exit 1 on any failure.
    Test {
        /// The workflow folder.
        #[arg(default_value = "workflows")]
        dir: PathBuf,
    },
    /// Compare a workflow folder with what a running daemon runs: what a
    /// reload would change, and whether it would be refused (exit 1).
    Plan {
        /// The workflow folder.
        #[arg(default_value = "workflows")]
        dir: PathBuf,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// Reports of a running daemon: conversion and time per stage and owner,
    /// sequence outcomes, owners' queues.
    Report {
        /// pipeline, sequences, owners or forecast (forecasts made 30, 60
        /// and 90 days ago against what was won since).
        #[arg(default_value = "pipeline")]
        name: String,
        /// The period, back from now.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only this pipeline (pipeline report).
        #[arg(long)]
        pipeline: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
        format: crate::report::Format,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
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
        /// Event data, NAME=VALUE (repeatable): `event.NAME` in rules.
        #[arg(long = "data")]
        data: Vec<String>,
        /// Idempotency key (default: none, never deduplicated).
        #[arg(long)]
        id: Option<String>,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// List the addresses no workflow emails (unsubscribed, bounced), with
    /// why and since when; or remove one.
    Suppressions {
        /// `remove ADDRESS`; without it, the list is printed.
        #[command(subcommand)]
        action: Option<SuppressionsAction>,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// Take a consistent backup of a running daemon's store into one file
    /// (ingest goes on meanwhile).
    Backup {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// Restore a backup file into a new or empty data folder.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data folder to create (as `run --data`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Check a stopped daemon's store: every table readable, every index
    /// matching its rows; exit 1 naming what is wrong.
    Check {
        /// The data folder (as `run --data`).
        #[arg(long, default_value = "var")]
        data: PathBuf,
        /// Rebuild indexes that do not match their rows.
        #[arg(long)]
        repair: bool,
    },
    /// A running daemon's sources: the payloads each kept because they
    /// could not be mapped, and replaying them after a fix.
    Sources {
        /// `rejected NAME` or `replay NAME`.
        #[command(subcommand)]
        action: SourcesAction,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// List open tasks of a running daemon, or complete one.
    Tasks {
        /// `complete ID`; without it, the open tasks are listed.
        #[command(subcommand)]
        action: Option<TasksAction>,
        /// Only this person's.
        #[arg(long)]
        owner: Option<String>,
        /// Only tasks nobody owns.
        #[arg(long)]
        unassigned: bool,
        /// The daemon (default $DEALFLOW_URL, else http://127.0.0.1:8080).
        #[arg(long, global = true)]
        url: Option<String>,
    },
}

/// What `dealflow suppressions` does besides listing.
#[derive(Debug, Subcommand)]
pub enum SuppressionsAction {
    /// Take an address off the list, so workflows may email it again.
    Remove {
        /// The address (any spelling: `Pat <pat@x.example>` is pat@x.example).
        address: String,
    },
}

/// What `dealflow sources` does.
#[derive(Debug, Subcommand)]
pub enum SourcesAction {
    /// List the payloads a source kept, with why each could not be mapped.
    Rejected {
        /// The source's name.
        name: String,
    },
    /// Map every payload a source kept again, under the running workflows;
    /// exit 1 if some still cannot be mapped.
    Replay {
        /// The source's name.
        name: String,
    },
}

/// What `dealflow tasks` does besides listing.
#[derive(Debug, Subcommand)]
pub enum TasksAction {
    /// Mark a task done (its id is in the listing); raises task.completed.
    Complete {
        /// The task's id.
        id: String,
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
    // async-imap traces every command it sends, LOGIN and its password
    // among them: that target stays silent whatever RUST_LOG asks.
    let filter = match "async_imap::imap_stream=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // Colour codes only for a person at a terminal: in a log file or
    // journald they are noise around every level and field.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints lines to stdout; a reader that went away (`| head`) ends the
/// output quietly instead of with a panic.
fn print_lines(lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        match writeln!(out, "{line}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Loads a workflow folder, printing its diagnostics; an error if it has errors.
fn load_workflows(dir: &std::path::Path) -> anyhow::Result<crate::config::Workflows> {
    let (workflows, diagnostics) =
        crate::config::load(dir, &crate::config::environment::ProcessEnvironment);
    for d in &diagnostics {
        eprintln!("{d}");
    }
    workflows.ok_or_else(|| {
        anyhow::anyhow!(
            "the workflows in {} have errors (listed above); nothing was run",
            dir.display()
        )
    })
}

/// Runs a parsed command line; the answer is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, format } => validate::run(&dir, format),
        Command::Schema => schema::run(),
        Command::Init { dir } => init::run(&dir),
        Command::Simulate {
            workflows,
            events,
            start,
            until,
            format,
        } => simulate::run(simulate::Options {
            workflows: &workflows,
            events: &events,
            start,
            until,
            format,
        }),
        Command::Test { dir } => test::run(&dir),
        Command::Report {
            name,
            since,
            pipeline,
            format,
            url,
        } => client::report(
            &client::Daemon::from_env(url)?,
            &name,
            client::ReportQuery {
                since: &since,
                pipeline: pipeline.as_deref(),
            },
            format,
        ),
        Command::Plan { dir, url } => plan::run(&dir, &client::Daemon::from_env(url)?),
        Command::Run {
            workflows,
            data,
            listen,
            max_body,
            store_cache_mib,
            log_format,
            read_timeout,
        } => {
            init_logging(log_format);
            let read_timeout = crate::config::values::parse_duration(&read_timeout)
                .map_err(|e| anyhow::anyhow!("--read-timeout: {e}"))?;
            run::run(run::RunOptions {
                workflows: &workflows,
                data: &data,
                listen,
                max_body,
                store_cache_mib,
                read_timeout,
            })
        }
        Command::Emit {
            event_type,
            record,
            fields,
            data,
            id,
            url,
        } => client::emit(
            &client::Daemon::from_env(url)?,
            client::EmitRequest {
                event_type: &event_type,
                record: &record,
                fields: &fields,
                data: &data,
                id,
            },
        ),
        Command::Suppressions { action, url } => {
            let daemon = client::Daemon::from_env(url)?;
            match action {
                Some(SuppressionsAction::Remove { address }) => {
                    client::remove_suppression(&daemon, &address)
                }
                None => client::suppressions(&daemon),
            }
        }
        Command::Backup { out, url } => operations::backup(&client::Daemon::from_env(url)?, &out),
        Command::Restore { file, data } => operations::restore(&file, &data),
        Command::Check { data, repair } => operations::check(&data, repair),
        Command::Sources { action, url } => {
            let daemon = client::Daemon::from_env(url)?;
            match action {
                SourcesAction::Rejected { name } => client::rejected(&daemon, &name),
                SourcesAction::Replay { name } => client::replay(&daemon, &name),
            }
        }
        Command::Tasks {
            action: Some(TasksAction::Complete { id }),
            url,
            ..
        } => client::complete_task(&client::Daemon::from_env(url)?, &id),
        Command::Tasks {
            action: None,
            owner,
            unassigned,
            url,
        } => client::tasks(&client::Daemon::from_env(url)?, owner, unassigned),
    }
}
