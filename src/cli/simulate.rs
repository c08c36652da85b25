//! `dealflow simulate`: the workflows on a virtual clock, events from a
//! `.jsonl` file, a dated timeline out; nothing is sent.

use super::load_workflows;
use crate::clock::{Clock, SystemClock};
use crate::config::values::parse_offset;
use crate::intake::event::parse_event;
use crate::simulation::{self, TimedEvent};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use std::path::Path;
use std::process::ExitCode;

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// `YYYY-MM-DD HH:MM UTC  kind  detail`, one line per entry.
    Text,
    /// One JSON object per entry.
    Json,
}

/// What `simulate` was asked.
pub struct Options<'a> {
    /// Workflow folder.
    pub workflows: &'a Path,
    /// Events file.
    pub events: &'a Path,
    /// Start of the virtual clock (default now).
    pub start: Option<String>,
    /// How long to run.
    pub until: String,
    /// Output.
    pub format: Format,
}

/// Runs the simulation and prints its timeline.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    let workflows = load_workflows(options.workflows)?;
    let start = match &options.start {
        Some(text) => parse_start(text)?,
        None => SystemClock.now(),
    };
    let until = crate::config::values::parse_duration(&options.until)
        .map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    let until = start + chrono::Duration::from_std(until).context("--until is too long")?;
    let text = std::fs::read_to_string(options.events)
        .with_context(|| format!("reading {}", options.events.display()))?;
    let events = read_events(&text, options.events, start)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the runtime")?;
    let timeline = runtime.block_on(simulation::run(&workflows, start, events, until))?;
    let lines = timeline.printable().map(|entry| match options.format {
        Format::Text => entry.line(),
        Format::Json => entry.json().to_string(),
    });
    super::print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}

/// `--start`: an RFC 3339 time, or a plain date meaning its midnight UTC.
fn parse_start(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .with_context(|| {
            format!(
                "--start {text:?}: write a date such as 2026-03-02 or an RFC 3339 time such as 2026-03-02T08:00:00-05:00"
            )
        })
}

/// Reads a `.jsonl` file of events; each may carry `at: "+4d"`. Every
/// problem is reported with its line, and nothing runs unless all are good.
fn read_events(text: &str, path: &Path, start: DateTime<Utc>) -> anyhow::Result<Vec<TimedEvent>> {
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match read_event(line, index, start) {
            Ok(e) => events.push(e),
            Err(why) => problems.push(format!("{}:{}: {why}", path.display(), index + 1)),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(events)
}

fn read_event(line: &str, index: usize, start: DateTime<Utc>) -> Result<TimedEvent, String> {
    let mut value: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let offset = match value.as_object_mut().and_then(|o| o.remove("at")) {
        None => std::time::Duration::ZERO,
        Some(Json::String(at)) => parse_offset(&at)?,
        Some(_) => return Err("\"at\" must be a string such as \"+4d\"".to_owned()),
    };
    let at = start + chrono::Duration::from_std(offset).map_err(|_| "\"at\" is too far")?;
    let mut event = parse_event(value, at)?;
    // No id in the file: one derived from the line, so a rerun is the same run.
    event
        .id
        .get_or_insert_with(|| format!("line-{}", index + 1));
    Ok(TimedEvent { at, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_takes_a_plain_date_or_a_time() {
        let date = parse_start("2026-03-02").unwrap();
        assert_eq!(date.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        let time = parse_start("2026-03-02T08:00:00-05:00").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-03-02T13:00:00+00:00");
        let err = parse_start("next monday").unwrap_err().to_string();
        assert!(err.contains("2026-03-02"), "{err}");
    }
}
