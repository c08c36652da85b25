//! One turn of the worker's loop: fire the timers and schedule slots that
//! are due, forget what is past keeping, handle a round of events, and say
//! what to do next. The daemon's task turns it and sleeps on its clock in
//! between; `simulate` turns the very same loop and moves its virtual clock
//! to the next due moment instead of sleeping, so a simulation runs exactly
//! what the daemon runs.
//!
//! A failed round never stops the loop ([`Recovery`]): the one event at
//! fault is set aside, a failure that may pass is backed off.

use super::{BATCH, RoundFailure, health, next_round, retention};
use crate::clock::Clock;
use crate::config::Workflows;
use crate::scheduler;
use crate::state::{Event, SetAsideEvent};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The loop's state between turns.
pub struct Turns<'a, S: Store> {
    store: &'a S,
    clock: &'a dyn Clock,
    health: &'a health::EngineHealth,
    recovery: Recovery,
    /// When to forget runs and events past keeping next; `None` never
    /// (a simulation keeps its whole timeline).
    next_prune: Option<DateTime<Utc>>,
    /// The longest idle sleep; `None` for a clock that never jumps.
    idle_cap: Option<Duration>,
    /// Events handled by the last turn.
    handled: usize,
    /// The failure the loop is backing off from, if any.
    failure: Option<StoreError>,
}

/// Whether the loop forgets runs and events past `keep_runs` and
/// `keep_events` (the daemon) or keeps everything (a simulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Forget what is past keeping.
    Prune,
    /// Keep everything.
    KeepAll,
}

impl<'a, S: Store> Turns<'a, S> {
    /// A loop over `store` on `clock`, reporting failures to `health`.
    /// `idle_cap` bounds an idle sleep (the daemon's wall clock may jump).
    pub fn new(
        store: &'a S,
        clock: &'a dyn Clock,
        health: &'a health::EngineHealth,
        retention: Retention,
        idle_cap: Option<Duration>,
    ) -> Self {
        Turns {
            store,
            clock,
            health,
            recovery: Recovery::new(),
            next_prune: (retention == Retention::Prune).then(|| clock.now()),
            idle_cap,
            handled: 0,
            failure: None,
        }
    }

    /// The failure the last turn backs off from (`NextStep::Wait`).
    pub fn failure(&self) -> Option<&StoreError> {
        self.failure.as_ref()
    }

    /// Events the last turn handled.
    pub fn handled(&self) -> usize {
        self.handled
    }

    /// Whether the last failure is still being backed off (a ring of new
    /// events must not cut the wait short).
    pub fn backing_off(&self) -> bool {
        self.recovery.backoff != FIRST_BACKOFF
    }

    /// One turn: fire what is due, prune when it is time, handle up to one
    /// round of events (flushed), and answer what to do next.
    pub async fn turn(&mut self, workflows: &Workflows, cursor: u64) -> NextStep {
        let (store, clock, health) = (self.store, self.clock, self.health);
        self.failure = None;
        let fire_failed = match scheduler::fire_due(store, workflows, clock.now()) {
            Ok(_) => None,
            Err(e) => Some(self.back_off(e)),
        };
        if let Some(at) = self.next_prune
            && clock.now() >= at
        {
            self.next_prune = Some(prune(store, workflows, clock));
        }
        let size = self.recovery.round_size(cursor);
        self.handled = 0;
        match next_round(store, workflows, clock, size).await {
            Ok(0) => match fire_failed {
                Some(step) => step,
                None => {
                    // Caught up after a failure: not retrying any more.
                    self.recovery.succeeded(health);
                    NextStep::Idle(self.idle(workflows))
                }
            },
            Ok(n) => {
                self.recovery.succeeded(health);
                self.handled = n;
                NextStep::Continue
            }
            Err(failure) => match self.recovery.failed(store, failure, clock.now()) {
                Ok(step) => step,
                Err(error) => self.back_off(error),
            },
        }
    }

    /// Backs off from a failure that may pass, keeping it to show.
    fn back_off(&mut self, error: StoreError) -> NextStep {
        let step = self
            .recovery
            .back_off(&error, self.clock.now(), self.health);
        self.failure = Some(error);
        step
    }

    /// How long an idle loop may sleep: until something is due, or it is
    /// time to prune.
    fn idle(&self, workflows: &Workflows) -> Duration {
        let wait = idle_wait(self.store, workflows, self.clock, self.idle_cap);
        match self.next_prune {
            Some(at) => wait.min((at - self.clock.now()).to_std().unwrap_or_default()),
            None => wait,
        }
    }
}

/// How the worker goes on after rounds fail, so one event it cannot handle
/// never stops the ones after it, and a failing disk is not hammered.
struct Recovery {
    /// Events up to this one are handled one at a time: a round failed
    /// somewhere in them, and alone the culprit can be told apart.
    one_by_one_through: u64,
    /// Wait before trying again after a failure that may pass.
    backoff: Duration,
}

/// First wait after a failure that may pass; doubled each time, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Go on at once: there may be more to handle.
    Continue,
    /// Nothing to do: sleep until rung, or until this long has passed and
    /// something is due.
    Idle(Duration),
    /// Wait this long first (backing off after a failure that may pass).
    Wait(Duration),
}

impl Recovery {
    fn new() -> Self {
        Recovery {
            one_by_one_through: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// How many events the next round may take, given the cursor.
    fn round_size(&self, cursor: u64) -> usize {
        if cursor < self.one_by_one_through {
            1
        } else {
            BATCH
        }
    }

    fn succeeded(&mut self, health: &health::EngineHealth) {
        if self.backoff != FIRST_BACKOFF {
            tracing::info!("Handling events works again.");
            health.recovered();
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// Decides what a failed round means: narrow it down, set its one event
    /// aside (an error about the data comes back every time), or back off
    /// (a disk error may pass; the event is never skipped for it).
    /// The error it answers is one to back off from.
    fn failed<S: Store>(
        &mut self,
        store: &S,
        failure: RoundFailure,
        now: DateTime<Utc>,
    ) -> Result<NextStep, StoreError> {
        let RoundFailure { error, mut events } = failure;
        if events.len() > 1 {
            self.one_by_one_through = events.last().map_or(0, |e| e.seq);
            tracing::warn!(error = %error, events = events.len(), "A round of events failed; handling them one at a time to find the one at fault.");
            return Ok(NextStep::Continue);
        }
        match (events.pop(), error.is_about_data()) {
            (Some(event), true) => {
                set_aside(store, event, &error, now).map(|()| NextStep::Continue)
            }
            _ => Err(error),
        }
    }

    fn back_off(
        &mut self,
        error: &StoreError,
        now: DateTime<Utc>,
        health: &health::EngineHealth,
    ) -> NextStep {
        let wait = self.backoff;
        tracing::error!(error = %error, retry_in = ?wait, "Handling events failed; trying again.");
        health.failed(
            now,
            &error.to_string(),
            now + chrono::Duration::from_std(wait).unwrap_or_default(),
        );
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        NextStep::Wait(wait)
    }
}

/// Records an event the engine cannot handle and moves the cursor past it,
/// in one commit, so the events after it are handled.
fn set_aside<S: Store>(
    store: &S,
    event: Event,
    error: &StoreError,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tracing::error!(seq = event.seq, id = %event.id, r#type = %event.event_type, error = %error,
        "An event cannot be handled; it is set aside (see /v1/status) and the events after it go on.");
    metrics::counter!("dealflow_events_set_aside_total").increment(1);
    store.commit(crate::store::Changes::set_aside(SetAsideEvent {
        seq: event.seq,
        id: event.id,
        event_type: event.event_type,
        record: event.record,
        error: error.to_string(),
        at: now,
    }))
}

/// Forgets runs past `settings.keep_runs` and handled events past
/// `settings.keep_events`; answers when to do it next.
fn prune<S: Store>(store: &S, workflows: &Workflows, clock: &dyn Clock) -> DateTime<Utc> {
    let settings = &workflows.settings;
    let now = clock.now();
    let failed = |what: &str, e: StoreError| {
        tracing::error!(error = %e, "Pruning old {what} failed; trying again later.");
        retention::Pruned {
            count: 0,
            more: false,
        }
    };
    let runs =
        retention::prune_runs(store, settings.keep_runs, now).unwrap_or_else(|e| failed("runs", e));
    let events = retention::prune_events(store, settings.keep_events, now)
        .unwrap_or_else(|e| failed("events", e));
    if runs.count > 0 || events.count > 0 {
        tracing::debug!(
            runs = runs.count,
            events = events.count,
            "Forgot runs and events past settings.keep_runs and keep_events."
        );
    }
    retention::next_prune(now, settings.keep_runs, runs).min(retention::next_prune(
        now,
        settings.keep_events,
        events,
    ))
}

/// How long the worker may sleep: until the next timer or schedule slot is
/// due (timers are only added by this worker, so it never misses an earlier
/// one), at most `cap`. With nothing due and no cap, [`Duration::MAX`].
fn idle_wait<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
    cap: Option<Duration>,
) -> Duration {
    let now = clock.now();
    let cap = cap.unwrap_or(Duration::MAX);
    let until_due = match scheduler::next_due(store, workflows, now) {
        Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO),
        Ok(None) => cap,
        Err(e) => {
            tracing::warn!(error = %e, "Could not read when the next timer is due; looking again in a second.");
            Duration::from_secs(1)
        }
    };
    until_due.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{KvStore, MemoryBackend, SetAsideTable};

    #[test]
    fn a_failure_that_may_pass_backs_off_and_shows_until_the_worker_catches_up() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let health = health::EngineHealth::default();
        let mut recovery = Recovery::new();
        let now = SystemClock.now();
        let disk = || RoundFailure {
            error: StoreError::backend_said("disk full"),
            events: Vec::new(),
        };
        let waits: Vec<Duration> = (0..7)
            .map(|_| {
                let Err(error) = recovery.failed(&store, disk(), now) else {
                    panic!("a disk error is waited out, never skipped");
                };
                match recovery.back_off(&error, now, &health) {
                    NextStep::Wait(wait) => wait,
                    _ => panic!("a disk error is waited out, never skipped"),
                }
            })
            .collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(waits[6], MAX_BACKOFF);
        assert_eq!(health.status()["state"], "retrying");
        assert!(
            health.status()["last_error"]
                .as_str()
                .unwrap()
                .contains("disk full")
        );
        assert_eq!(store.set_aside_count(10).unwrap(), 0, "nothing set aside");
        recovery.succeeded(&health);
        assert_eq!(health.status()["state"], "running");
        assert_eq!(recovery.backoff, FIRST_BACKOFF);
    }
}
