//! Time: durable timers (sequence waits, stalls, overdue tasks) and cron
//! schedules (send windows are calendars: `config::send_window`).
//!
//! Timers are rows ordered by due time. Firing one appends the event it
//! carries to the log (its id is the timer's id, so it can never be appended
//! twice) and deletes the timer in the same commit; the engine then handles
//! it like any other event. Cost follows what is due, never what waits.
//! Schedules keep only the last slot they handled (a counter), so a removed
//! schedule simply stops and a reloaded one continues from its last slot.
//!
//! Owns: turning due time into logged events. Never: handles those events
//! (the engine does, through the worker) or reads the wall clock itself.

pub mod schedule;

use crate::config::Workflows;
use crate::config::workflows::RuleTrigger;
use crate::engine::internal;
use crate::state::{NewEvent, RecordKey};
use crate::store::{FiringWrites, Store, StoreError};
use chrono::{DateTime, Utc};
use schedule::SlotDue;
use serde_json::json;

/// Timers fired per commit.
const FIRE_BATCH: usize = 1024;

/// Appends the events of every timer and schedule slot due at `now` to the
/// log; answers how many. The caller's next engine round handles them and
/// flushes; a crash before that leaves the timers in place to fire again.
pub fn fire_due<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut changes = FiringWrites::default();
    let mut timers = Vec::new();
    for due in store.due_timers(now, FIRE_BATCH)? {
        match due {
            Ok(timer) => timers.push(timer),
            Err(spoiled) => {
                tracing::error!(timer = %spoiled.id, error = %spoiled.error, "A timer's stored row does not decode; it is set aside and the other timers go on.");
                changes.timers_done([(spoiled.due_at, spoiled.id.clone())]);
                changes.set_aside([spoiled]);
            }
        }
    }
    let mut fired = timers.len();
    let lateness: Vec<chrono::Duration> = timers.iter().map(|t| now - t.due_at).collect();
    for timer in timers {
        changes.timers_done([(timer.due_at, timer.id.clone())]);
        let mut event = timer.event;
        event.id = Some(timer.id);
        changes.fire([event]);
    }
    fired += due_schedules(store, workflows, now, &mut changes)?;
    if !changes.is_empty() {
        store.commit(changes.into())?;
        lateness.into_iter().for_each(crate::telemetry::timer_fired);
    }
    Ok(fired)
}

/// When the next timer or schedule slot is due.
pub fn next_due<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut next = store.next_timer()?;
    for (name, schedule) in schedules(workflows) {
        let last = last_slot(store, name)?.unwrap_or(now);
        if let Some(slot) = schedule::next_after(schedule, last) {
            next = Some(next.map_or(slot, |n| n.min(slot)));
        }
    }
    Ok(next)
}

fn schedules(
    workflows: &Workflows,
) -> impl Iterator<Item = (&str, &crate::config::workflows::Schedule)> {
    workflows.rules.iter().filter_map(|r| match &r.trigger {
        RuleTrigger::Schedule(s) => Some((r.name.as_str(), s.as_ref())),
        RuleTrigger::Events(_) => None,
    })
}

fn counter_name(rule: &str) -> String {
    format!("schedule/{rule}")
}

fn last_slot<S: Store>(store: &S, rule: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ms = store.counter(&counter_name(rule))?;
    Ok((ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms as i64))
        .flatten())
}

/// Adds the schedule slots due at `now`, and where each schedule has got
/// to; answers how many slots fire.
fn due_schedules<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
    changes: &mut FiringWrites,
) -> Result<usize, StoreError> {
    let mut fired = 0;
    for (rule, schedule) in schedules(workflows) {
        let Some(last) = last_slot(store, rule)? else {
            // A new schedule starts from now: slots before it existed are
            // not "missed".
            changes.counters([(counter_name(rule), millis(now))]);
            continue;
        };
        let slot = match schedule::due(schedule, last, now) {
            SlotDue::Nothing => continue,
            SlotDue::Pass(slot) => slot,
            SlotDue::Fire(slot) => {
                changes.raise([schedule_event(rule, slot)]);
                fired += 1;
                slot
            }
        };
        changes.counters([(counter_name(rule), millis(slot))]);
    }
    Ok(fired)
}

fn schedule_event(rule: &str, slot: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: Some(format!("schedule/{rule}/{}", millis(slot))),
        event_type: internal::SCHEDULE.to_owned(),
        record: RecordKey {
            kind: internal::SCHEDULE_KIND.to_owned(),
            id: rule.to_owned(),
        },
        fields: Default::default(),
        data: json!({ "rule": rule, "slot": crate::engine::time(slot) })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        occurred_at: slot,
        depth: 0,
    }
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Effects, Timer};
    use crate::store::{Changes, EventTable, KvStore, MemoryBackend, SetAsideTable, TimerTable};

    #[test]
    fn a_timer_that_does_not_decode_is_set_aside_and_the_others_fire() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let workflows = crate::config::load_for_tests("rules: []\n");
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
            .unwrap()
            .to_utc();
        let timer = |id: &str, minutes| Timer {
            id: id.to_owned(),
            due_at: now - chrono::Duration::minutes(minutes),
            event: NewEvent::form(id, "L1"),
        };
        let timers = vec![timer("first", 3), timer("last", 1)];
        store
            .commit(Changes::from(Effects {
                timers,
                ..Effects::default()
            }))
            .unwrap();
        let spoiled_due = now - chrono::Duration::minutes(2);
        store.spoil_timer(spoiled_due, "spoiled");

        assert_eq!(fire_due(&store, &workflows, now).unwrap(), 2);
        let fired: Vec<String> = store
            .events_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(fired, ["first", "last"], "the timer after it fired too");
        assert_eq!(store.pending_timers(10).unwrap(), 0, "its row went aside");
        assert_eq!(store.next_timer().unwrap(), None);
        let aside = store.set_aside_timers(10).unwrap();
        assert_eq!(store.set_aside_timer_count(10).unwrap(), 1);
        assert_eq!(
            (aside[0].id.as_str(), aside[0].due_at),
            ("spoiled", spoiled_due)
        );
        assert!(aside[0].error.contains("decode"), "{}", aside[0].error);
        assert_eq!(aside[0].stored, [0xc1], "its bytes are kept");
        assert_eq!(
            fire_due(&store, &workflows, now).unwrap(),
            0,
            "nothing is left to fail"
        );
    }
}
