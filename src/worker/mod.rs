//! The single writer between the event log and the engine: takes a round of
//! events in log order, runs the engine on each (reading through the round's
//! own pending changes, see [`round`]), and commits the round's outcome
//! (state, raised events, runs and the cursor) as one atomic change. Because
//! the cursor moves in the same commit as the state it produced, a crash at
//! any point replays from the last committed round: each event is handled
//! exactly once.
//!
//! Owns: the order of events, rounds, commits, the loop that turns them
//! ([`Turns`], which `simulate` runs too) and the swap of workflow sets.
//! Never: decides what an event means (the engine does) or stops for one
//! event it cannot handle (it is set aside, counted and shown).

pub mod health;
pub mod retention;
mod round;
mod store_view;
mod turns;
pub use turns::{NextStep, Retention, Turns};

use crate::clock::Clock;
use crate::config::Workflows;
use crate::engine::{self, MoveResult};
use crate::state::{Event, RecordKey};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Events read from the log per round.
const BATCH: usize = 256;

/// Longest idle sleep. The worker is rung when events arrive and computes
/// when the next timer or schedule slot is due, so this only bounds what
/// nothing rings for: the wall clock jumping.
const IDLE_CAP: Duration = Duration::from_secs(60);

/// Handles every event after the cursor; answers how many were handled.
/// Flushes once per round, before the caller hears about the progress.
pub async fn drain<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let mut handled = 0;
    loop {
        match next_round(store, workflows, clock, BATCH).await {
            Ok(0) => return Ok(handled),
            Ok(n) => handled += n,
            Err(failure) => return Err(failure.error),
        }
    }
}

/// A round that did not go through, and the events it held (none when the
/// log itself could not be read).
struct RoundFailure {
    error: StoreError,
    events: Vec<Event>,
}

/// Handles up to `limit` events after the cursor, commits and flushes them;
/// answers how many it handled (0 when the log is caught up).
async fn next_round<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
    limit: usize,
) -> Result<usize, RoundFailure> {
    let handled = handle_next_round(store, workflows, clock, limit)?;
    if handled > 0 {
        store.flush_soon().await.map_err(|error| RoundFailure {
            error,
            events: Vec::new(),
        })?;
    }
    Ok(handled)
}

/// Handles and commits up to `limit` events after the cursor.
fn handle_next_round<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
    limit: usize,
) -> Result<usize, RoundFailure> {
    let unread = |error| RoundFailure {
        error,
        events: Vec::new(),
    };
    let cursor = store.cursor().map_err(unread)?;
    let events = store.events_after(cursor, limit).map_err(unread)?;
    if events.is_empty() {
        return Ok(0);
    }
    match handle_round(store, workflows, clock, &events) {
        Ok(()) => Ok(events.len()),
        Err(error) => Err(RoundFailure { error, events }),
    }
}

/// Handles a round of events and commits them as one change.
fn handle_round<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut round = round::Round::new(store);
    for event in events {
        let effects = engine::handle(event, workflows, &round, clock.now())?;
        round.absorb(effects)?;
    }
    let effects = round.into_effects();
    // Counted before the commit (no copy of the runs on this hot path); a
    // failed commit, which is retried, counts its runs twice.
    crate::telemetry::runs_committed(&effects.runs);
    store.commit(crate::store::Changes::from(effects))
}

/// A request the worker answers itself, so it is ordered with events.
#[derive(Debug)]
pub enum Command {
    /// A gated stage move from the API.
    Move {
        /// The record.
        record: RecordKey,
        /// Target stage.
        to: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<MoveResult, StoreError>>,
    },
    /// Run a new workflow set from the next round on, after moving the
    /// enrollments it changes; answers how many moved, or why not.
    Swap {
        /// The new set.
        workflows: Arc<Workflows>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// Handle to the running worker.
#[derive(Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    handled: watch::Receiver<u64>,
}

impl WorkerHandle {
    /// Sends a command and waits for its answer.
    pub async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| StoreError::Stopped("the engine worker"))
    }

    /// Waits until the event at `seq` has been handled.
    pub async fn handled(&self, seq: u64) {
        let mut rx = self.handled.clone();
        let _ = rx.wait_for(|done| *done >= seq).await;
    }
}

/// Starts the worker; it stops when `cancel` fires, after its current round.
/// Rounds run inline, so spawn it where no request waits on the thread
/// (the daemon's background runtime, `cli::background`).
pub fn spawn<S: Store>(
    store: Arc<S>,
    workflows: Arc<arc_swap::ArcSwap<Workflows>>,
    clock: Arc<dyn Clock>,
    health: Arc<health::EngineHealth>,
    cancel: CancellationToken,
) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
    let (commands, mut inbox) = mpsc::channel(64);
    let initial = store.cursor().unwrap_or(0);
    let (progress, handled) = watch::channel(initial);
    let handle = WorkerHandle { commands, handled };
    let task = tokio::spawn(async move {
        let mut line = ProgressLine::default();
        let mut turns = Turns::new(
            store.as_ref(),
            clock.as_ref(),
            &health,
            Retention::Prune,
            Some(IDLE_CAP),
        );
        loop {
            let snapshot = workflows.load_full();
            // The cursor as this worker last moved it (only it moves it).
            let moved = *progress.borrow();
            let step = turns.turn(&snapshot, moved).await;
            let cursor = store.cursor().unwrap_or(0);
            let _ = progress.send(cursor);
            let line_due_in = line.count(turns.handled(), cursor, clock.now());
            let wait = match step {
                NextStep::Wait(wait) => wait,
                // Woken in time to write the line for the last events.
                NextStep::Idle(wait) => line_due_in.map_or(wait, |due| wait.min(due)),
                NextStep::Continue => {
                    // Commands wait at most one round, however busy the log is.
                    while let Ok(command) = inbox.try_recv() {
                        run_command(store.as_ref(), &workflows, clock.as_ref(), command).await;
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = store.wakeups().events.notified(), if !turns.backing_off() => {}
                Some(command) = inbox.recv() => run_command(store.as_ref(), &workflows, clock.as_ref(), command).await,
                _ = clock.sleep(wait) => {}
            }
        }
        tracing::info!("Engine worker stopped.");
    });
    (handle, task)
}

/// Shortest time between two "Handled events." lines. Under load a round
/// ends every millisecond or two, and a line for each (about 700 a second
/// under W1) was more than anyone reads, and 0.8% of the daemon's CPU.
const PROGRESS_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// The "Handled events." line, a sign of life an operator can follow: the
/// events handled since the last line, at most one line per
/// [`PROGRESS_EVERY`].
#[derive(Debug, Default)]
struct ProgressLine {
    unlogged: usize,
    last: Option<DateTime<Utc>>,
}

impl ProgressLine {
    /// Counts `handled` more events, handled through `through`; writes the
    /// line if one is due, else answers when it will be.
    fn count(&mut self, handled: usize, through: u64, now: DateTime<Utc>) -> Option<Duration> {
        self.unlogged += handled;
        if self.unlogged == 0 {
            return None;
        }
        let next = self.last.map(|last| last + PROGRESS_EVERY);
        if let Some(due) = next.filter(|due| *due > now) {
            return (due - now).to_std().ok();
        }
        tracing::info!(events = self.unlogged, through, "Handled events.");
        self.unlogged = 0;
        self.last = Some(now);
        None
    }
}

async fn run_command<S: Store>(
    store: &S,
    workflows: &arc_swap::ArcSwap<Workflows>,
    clock: &dyn Clock,
    command: Command,
) {
    match command {
        Command::Move { record, to, reply } => {
            let snapshot = workflows.load_full();
            let result = move_now(store, &snapshot, clock, &record, &to).await;
            let _ = reply.send(result);
        }
        Command::Swap {
            workflows: new,
            reply,
        } => {
            let result = swap(store, workflows, new, clock).await;
            let _ = reply.send(result);
        }
    }
}

/// Moves the enrollments the new set changes (or refuses), then swaps.
/// Only this worker writes enrollments, so nothing moves them meanwhile.
async fn swap<S: Store>(
    store: &S,
    workflows: &arc_swap::ArcSwap<Workflows>,
    new: Arc<Workflows>,
    clock: &dyn Clock,
) -> Result<usize, String> {
    let old = workflows.load_full();
    let plan = engine::reload_plan::plan(&old, &new, store).map_err(|e| e.to_string())?;
    if let Some(refused) = plan.refusal() {
        return Err(refused);
    }
    let now = clock.now();
    let mut effects = engine::Effects::default();
    for (enrollment, to) in &plan.moves {
        effects.append(engine::sequence::move_enrollment(enrollment, to, now));
    }
    if !plan.moves.is_empty() {
        store
            .commit(crate::store::Changes::from(effects))
            .map_err(|e| e.to_string())?;
        store.flush().await.map_err(|e| e.to_string())?;
    }
    workflows.store(new);
    Ok(plan.moves.len())
}

async fn move_now<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
    record: &RecordKey,
    to: &str,
) -> Result<MoveResult, StoreError> {
    let now = clock.now();
    let request = Event {
        seq: 0,
        id: format!("stage-move-{record}-{to}"),
        event_type: engine::internal::MOVE_REQUESTED.to_owned(),
        record: record.clone(),
        fields: Default::default(),
        data: serde_json::Map::from_iter([("to".to_owned(), serde_json::Value::from(to))]),
        occurred_at: now,
        depth: 0,
    };
    let (result, effects) = engine::move_stage(record, to, &request, workflows, store, now)?;
    store.commit(crate::store::Changes::from(effects))?;
    store.flush().await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::state::NewEvent;
    use crate::store::{EventTable, KvStore, MemoryBackend, RecordTable, SetAsideTable};

    #[test]
    fn the_progress_line_is_written_at_most_once_a_second() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc();
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let mut line = ProgressLine::default();
        assert_eq!(line.count(0, 0, at(0)), None, "nothing to say");
        assert_eq!(line.count(3, 3, at(0)), None, "the first line goes at once");
        assert_eq!((line.unlogged, line.last), (0, Some(at(0))));
        assert_eq!(line.count(2, 5, at(400)), Some(Duration::from_millis(600)));
        assert_eq!(line.count(4, 9, at(900)), Some(Duration::from_millis(100)));
        assert_eq!(line.unlogged, 6, "held for the next line");
        assert_eq!(line.count(0, 9, at(1_000)), None, "due: written");
        assert_eq!((line.unlogged, line.last), (0, Some(at(1_000))));
    }

    fn event(id: &str, record: &str) -> NewEvent {
        NewEvent {
            id: Some(id.to_owned()),
            event_type: "lead.created".to_owned(),
            record: RecordKey {
                kind: "lead".to_owned(),
                id: record.to_owned(),
            },
            fields: serde_json::Map::from_iter([("name".to_owned(), "Pat".into())]),
            data: Default::default(),
            occurred_at: SystemClock.now(),
            depth: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_that_cannot_be_handled_is_set_aside_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (workflows, diagnostics) =
            crate::config::load(dir.path(), &std::collections::HashMap::new());
        let workflows = workflows.unwrap_or_else(|| panic!("{diagnostics:#?}"));
        let store = Arc::new(KvStore::open(MemoryBackend::default(), "memory").unwrap());
        let poisoned = RecordKey {
            kind: "lead".to_owned(),
            id: "L2".to_owned(),
        };
        store.spoil_record(&poisoned);
        let appended = store
            .append_events(vec![
                event("e1", "L1"),
                event("e2", "L2"),
                event("e3", "L3"),
            ])
            .unwrap();
        let health = Arc::new(health::EngineHealth::default());
        let cancel = CancellationToken::new();
        let (handle, task) = spawn(
            store.clone(),
            Arc::new(arc_swap::ArcSwap::from_pointee(workflows)),
            Arc::new(SystemClock),
            health.clone(),
            cancel.clone(),
        );
        tokio::time::timeout(Duration::from_secs(10), handle.handled(appended[2].seq))
            .await
            .expect("the events after the poisoned one are handled");
        cancel.cancel();
        task.await.unwrap();

        let set_aside = store.set_aside_events(10).unwrap();
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
        assert_eq!(set_aside[0].seq, appended[1].seq);
        assert_eq!(set_aside[0].record, poisoned);
        assert!(
            set_aside[0].error.contains("cannot be decoded"),
            "{}",
            set_aside[0].error
        );
        assert_eq!(store.set_aside_count(100).unwrap(), 1);
        for handled in ["L1", "L3"] {
            let key = RecordKey {
                kind: "lead".to_owned(),
                id: handled.to_owned(),
            };
            assert!(
                store.record(&key).unwrap().is_some(),
                "{handled} was handled"
            );
        }
        assert!(store.cursor().unwrap() >= appended[2].seq);
        assert_eq!(health.status()["state"], "running");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_worker_sleeps_on_its_clock_so_a_test_can_move_a_day_at_once() {
        let workflows = crate::config::load_for_tests(
            "sequences:\n  - name: s\n    for: lead\n    steps:\n      - wait: 1d\n      - { id: call, task: { title: call } }\nrules:\n  - name: r\n    for: lead\n    on: lead.created\n    do: [ { enroll: s } ]\n",
        );
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
            .unwrap()
            .to_utc();
        let clock = Arc::new(crate::clock::ManualClock::new(start));
        let store = Arc::new(KvStore::open(MemoryBackend::default(), "memory").unwrap());
        let cancel = CancellationToken::new();
        let (_handle, task) = spawn(
            store.clone(),
            Arc::new(arc_swap::ArcSwap::from_pointee(workflows)),
            clock.clone(),
            Arc::new(health::EngineHealth::default()),
            cancel.clone(),
        );
        let mut lead = event("e1", "L1");
        lead.occurred_at = start;
        store.append_events(vec![lead]).unwrap();
        let next_timer =
            |store: &KvStore<MemoryBackend>| crate::store::TimerTable::next_timer(store).unwrap();
        let waiting = async {
            while next_timer(&store) != Some(start + chrono::Duration::days(1)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the enrollment waits a day");
        let open = |store: &KvStore<MemoryBackend>| {
            crate::store::TaskTable::tasks(store, &Default::default(), None, 10)
                .unwrap()
                .items
                .len()
        };
        assert_eq!(open(&store), 0, "the wait has not passed");
        // A day passes on the worker's clock, not on the wall's.
        clock.advance(chrono::Duration::days(1));
        let called = async {
            while open(&store) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), called)
            .await
            .expect("the step after the wait ran once the clock moved");
        cancel.cancel();
        task.await.unwrap();
    }
}
