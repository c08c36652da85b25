//! Running workflows on a virtual clock: the daemon's engine and scheduler
//! over an in-memory store, jumping from one due moment to the next, with
//! nothing sent. `dealflow simulate` prints the timeline; `dealflow test`
//! matches it against a workflow file's expectations.
//!
//! Owns: the virtual clock loop and the timeline. Never: sends, touches a
//! disk store, or runs engine code of its own.

mod timeline;
pub mod workflow_test;

pub use timeline::{Entry, Timeline};

use crate::clock::{Clock, ManualClock};
use crate::config::Workflows;
use crate::scheduler;
use crate::state::NewEvent;
use crate::store::{EventTable, KvStore, MemoryBackend, StoreError};
use crate::worker;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

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

/// Steps at one moment before the simulation gives up on it: rules that keep
/// setting timers due "now" would otherwise never let the clock move.
const MAX_STEPS_PER_MOMENT: usize = 10_000;

/// Runs `events` from `start` until `until` and answers the timeline.
pub async fn run(
    workflows: &Workflows,
    start: DateTime<Utc>,
    events: Vec<TimedEvent>,
    until: DateTime<Utc>,
) -> Result<Timeline, StoreError> {
    let store = KvStore::open(MemoryBackend::default(), "memory")?;
    run_on(&store, workflows, start, events, until)?;
    Timeline::from_store(&store, workflows)
}

/// Runs `events` from `start` until `until` on a store, which may hold an
/// earlier run's state (a test can look at the store, act, and go on).
pub fn run_on(
    store: &KvStore<MemoryBackend>,
    workflows: &Workflows,
    start: DateTime<Utc>,
    mut events: Vec<TimedEvent>,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let clock = ManualClock::new(start);
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
        settle(store, workflows, &clock)?;
        let next_input = inbox.front().map(|e| e.at);
        let next_timer = scheduler::next_due(store, workflows, now)?;
        let Some(next) = [next_input, next_timer].into_iter().flatten().min() else {
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

/// Fires what is due at the clock's time and handles every event that
/// follows, until nothing more happens at this moment.
fn settle(
    store: &KvStore<MemoryBackend>,
    workflows: &Workflows,
    clock: &ManualClock,
) -> Result<(), StoreError> {
    for _ in 0..MAX_STEPS_PER_MOMENT {
        let fired = scheduler::fire_due(store, workflows, clock.now())?;
        let handled = worker::drain_now(store, workflows, clock)?;
        if fired == 0 && handled == 0 {
            return Ok(());
        }
    }
    tracing::warn!(
        "Stopped after {MAX_STEPS_PER_MOMENT} steps at one moment: rules keep setting timers due now."
    );
    Ok(())
}

#[cfg(test)]
mod tests;
