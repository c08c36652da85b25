//! Running workflows on a virtual clock: the daemon worker's own loop over
//! an in-memory store, jumping from one due moment to the next, with
//! nothing sent. `dealflow simulate` prints the timeline; `dealflow test`
//! matches it against a workflow file's expectations.
//!
//! Owns: moving the virtual clock and the timeline. Never: sends, touches
//! a disk store, or runs a loop or engine code of its own.

mod timeline;
pub mod workflow_test;

pub use timeline::{Entry, Timeline};

use crate::clock::ManualClock;
use crate::config::Workflows;
use crate::state::NewEvent;
use crate::store::{EventTable, KvStore, MemoryBackend, StoreError};
use crate::worker::{self, NextStep, Retention, Turns};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;

/// An input event and when it arrives.
#[derive(Debug, Clone)]
pub struct TimedEvent {
    /// Arrival on the virtual clock.
    pub at: DateTime<Utc>,
    /// The event (`occurred_at` is set to `at`).
    pub event: NewEvent,
}

/// An event of `event_type` on `record` (`KIND/ID`) with `fields`, arriving
/// at `at`: the tests' shorthand.
#[cfg(test)]
pub(crate) fn timed_event(
    at: DateTime<Utc>,
    event_type: &str,
    record: &str,
    fields: serde_json::Value,
) -> TimedEvent {
    let (kind, id) = record.split_once('/').unwrap_or((record, ""));
    TimedEvent {
        at,
        event: NewEvent {
            id: None,
            event_type: event_type.into(),
            record: crate::state::RecordKey {
                kind: kind.into(),
                id: id.into(),
            },
            fields: fields.as_object().cloned().unwrap_or_default(),
            data: Default::default(),
            occurred_at: at,
            depth: 0,
        },
    }
}

/// Turns at one moment before the simulation gives up on it: rules that
/// keep setting timers due "now" would otherwise never let the clock move.
const MAX_STEPS_PER_MOMENT: usize = 10_000;

/// Runs `events` from `start` until `until` and answers the timeline.
pub async fn run(
    workflows: &Workflows,
    start: DateTime<Utc>,
    events: Vec<TimedEvent>,
    until: DateTime<Utc>,
) -> Result<Timeline, StoreError> {
    let store = KvStore::open(MemoryBackend::default(), "memory")?;
    run_on(&store, workflows, start, events, until).await?;
    Timeline::from_store(&store, workflows)
}

/// Runs `events` from `start` until `until` on a store, which may hold an
/// earlier run's state (a test can look at the store, act, and go on).
///
/// The loop is the daemon worker's own ([`worker::Turns`]); where the
/// daemon sleeps until something is due, the simulation moves its clock
/// there. It keeps everything (no retention), so the timeline is whole.
pub async fn run_on(
    store: &KvStore<MemoryBackend>,
    workflows: &Workflows,
    start: DateTime<Utc>,
    mut events: Vec<TimedEvent>,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let clock = ManualClock::new(start);
    let health = worker::health::EngineHealth::default();
    let mut turns = Turns::new(store, &clock, &health, Retention::KeepAll, None);
    events.sort_by_key(|e| e.at);
    let mut inbox: VecDeque<TimedEvent> = events.into();
    let mut now = start;
    loop {
        clock.set(now);
        let arrived: Vec<NewEvent> = std::iter::from_fn(|| {
            inbox
                .front()
                .is_some_and(|e| e.at <= now)
                .then(|| inbox.pop_front())
                .flatten()
        })
        .map(|mut e| {
            e.event.occurred_at = e.at;
            e.event
        })
        .collect();
        store.append_events(arrived)?;
        let idle = settle(&mut turns, store, workflows).await?;
        let next_input = inbox.front().map(|e| e.at);
        let next_due = chrono::Duration::from_std(idle)
            .ok()
            .and_then(|idle| now.checked_add_signed(idle));
        let Some(next) = [next_input, next_due].into_iter().flatten().min() else {
            break;
        };
        if next > until {
            break;
        }
        if next <= now {
            tracing::warn!(at = %now, "Something due now did not fire; stopping the simulation.");
            break;
        }
        now = next;
    }
    Ok(())
}

/// Turns the worker's loop until nothing more happens at this moment;
/// answers how long it would then sleep (until the next timer or slot).
async fn settle(
    turns: &mut Turns<'_, KvStore<MemoryBackend>>,
    store: &KvStore<MemoryBackend>,
    workflows: &Workflows,
) -> Result<Duration, StoreError> {
    for _ in 0..MAX_STEPS_PER_MOMENT {
        match turns.turn(workflows, store.cursor()?).await {
            NextStep::Continue => {}
            NextStep::Idle(wait) => return Ok(wait),
            // Memory does not fail and then recover: a failure ends the run.
            NextStep::Wait(_) => {
                return Err(turns
                    .failure()
                    .cloned()
                    .unwrap_or_else(|| StoreError::backend_said("the simulation failed")));
            }
        }
    }
    tracing::warn!(
        "Stopped after {MAX_STEPS_PER_MOMENT} steps at one moment: rules keep setting timers due now."
    );
    Ok(Duration::ZERO)
}

#[cfg(test)]
mod tests;
