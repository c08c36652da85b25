//! `dealflow test`: each `tests:` case runs on the virtual clock and its
//! timeline must contain the expected entries, in order, and none of the
//! forbidden ones.

use super::{TimedEvent, Timeline};
use crate::config::Workflows;
use crate::config::workflows::{TestInput, WorkflowTest};
use crate::state::{NewEvent, RecordKey};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use std::fmt::Write;

/// How one test went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The test's name.
    pub name: String,
    /// Empty when it passed; else what went wrong, ready to print.
    pub failures: Vec<String>,
}

impl Outcome {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every workflow test.
pub async fn run_all(workflows: &Workflows) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::new();
    for test in &workflows.tests {
        outcomes.push(run_one(workflows, test).await?);
    }
    Ok(outcomes)
}

async fn run_one(workflows: &Workflows, test: &WorkflowTest) -> Result<Outcome, StoreError> {
    let start = test.start.with_timezone(&Utc);
    let mut events = Vec::new();
    for (i, input) in test.events.iter().enumerate() {
        match input {
            TestInput::Event(e) => events.push(timed_event(start, i, e)),
            TestInput::Payload { .. } => match mapped(workflows, start, input) {
                Ok(mapped) => events.extend(mapped),
                Err(failure) => {
                    return Ok(Outcome {
                        name: test.name.clone(),
                        failures: vec![failure],
                    });
                }
            },
        }
    }
    let until = start + chrono::Duration::from_std(test.until).unwrap_or(chrono::Duration::MAX);
    let timeline = super::run(workflows, start, events, until).await?;
    Ok(Outcome {
        name: test.name.clone(),
        failures: check(test, &timeline),
    })
}

/// The events a test's payload gives through its source, as the daemon
/// would map it (not verified: tests post unsigned).
fn mapped(
    workflows: &Workflows,
    start: DateTime<Utc>,
    input: &TestInput,
) -> Result<Vec<TimedEvent>, String> {
    let TestInput::Payload {
        at,
        source,
        payload,
        headers,
    } = input
    else {
        return Ok(Vec::new());
    };
    let at = start + chrono::Duration::from_std(*at).unwrap_or(chrono::Duration::MAX);
    let Some(found) = workflows.sources.get(source) else {
        return Err(format!("no source is called \"{source}\""));
    };
    let body = payload.to_string();
    let verified = crate::intake::verify::Verified::default();
    let events =
        crate::intake::mapping::map(workflows, found, body.as_bytes(), headers, &verified, at)
            .map_err(|e| {
                format!(
                    "the payload posted to source \"{source}\" would be kept as unmappable: {e}"
                )
            })?;
    Ok(events
        .into_iter()
        .map(|event| TimedEvent { at, event })
        .collect())
}

fn timed_event(
    start: DateTime<Utc>,
    index: usize,
    e: &crate::config::workflows::TestEvent,
) -> TimedEvent {
    let at = start + chrono::Duration::from_std(e.at).unwrap_or(chrono::Duration::MAX);
    TimedEvent {
        at,
        event: NewEvent {
            id: Some(
                e.id.clone()
                    .unwrap_or_else(|| format!("test-event-{index}")),
            ),
            event_type: e.event_type.clone(),
            record: RecordKey {
                kind: e.kind.clone(),
                id: e.record_id.clone(),
            },
            fields: e.fields.clone().into_iter().collect(),
            data: e.data.clone().into_iter().collect(),
            occurred_at: at,
            depth: 0,
        },
    }
}

/// Every way the timeline misses the test's expectations. Expected entries
/// must happen in the order listed, by time: entries of the same moment
/// (an email and the `sequence.completed` it led to) match in any order.
pub fn check(test: &WorkflowTest, timeline: &Timeline) -> Vec<String> {
    let mut failures = Vec::new();
    let mut used = vec![false; timeline.entries.len()];
    let mut not_before = None;
    for (kind, fields) in &test.expect {
        let matches =
            |e: &super::Entry| e.kind == *kind && contains(&Json::Object(e.fields.clone()), fields);
        let found = timeline
            .entries
            .iter()
            .enumerate()
            .position(|(i, e)| !used[i] && not_before.is_none_or(|t| e.at >= t) && matches(e));
        match found {
            Some(i) => {
                used[i] = true;
                not_before = Some(timeline.entries[i].at);
            }
            None => {
                let what = if timeline.entries.iter().any(matches) {
                    "expected, in this order, but it came earlier"
                } else {
                    "expected, but nothing matched"
                };
                failures.push(format!("{what}: {{ {kind}: {fields} }}"));
                break;
            }
        }
    }
    for (kind, fields) in &test.expect_not {
        if let Some(e) = timeline
            .entries
            .iter()
            .find(|e| e.kind == *kind && contains(&Json::Object(e.fields.clone()), fields))
        {
            failures.push(format!(
                "not expected, but happened: {{ {kind}: {fields} }}\n      {}",
                e.line()
            ));
        }
    }
    if !failures.is_empty() {
        let mut listing = String::from("the timeline was:");
        for e in timeline.printable() {
            let _ = write!(listing, "\n      {}", e.line());
        }
        failures.push(listing);
    }
    failures
}

/// Subset match: every field the expectation names has an equal value
/// (numbers compared as numbers, objects recursively).
fn contains(actual: &Json, expected: &Json) -> bool {
    match (actual, expected) {
        (_, Json::Null) => true,
        (Json::Object(a), Json::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Json::Number(a), Json::Number(e)) => a.as_f64() == e.as_f64(),
        (a, e) => a == e,
    }
}
