//! The single writer between the event log and the engine: takes a round of
//! events in log order, runs the engine on each (reading through the round's
//! own pending changes, see [`round`]), and commits the round's outcome
//! (state, raised events, runs and the cursor) as one atomic change. Because
//! the cursor moves in the same commit as the state it produced, a crash at
//! any point replays from the last committed round: each event is handled
//! exactly once.

pub mod retention;
mod round;

use crate::clock::Clock;
use crate::config::Workflows;
use crate::engine::{self, MoveResult};
use crate::scheduler;
use crate::state::{Event, RecordKey};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Events read from the log per round.
const BATCH: usize = 256;

/// Longest idle sleep.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Handles every event after the cursor; answers how many were handled.
/// Flushes once per round, before the caller hears about the progress.
pub async fn drain<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let mut handled = 0;
    loop {
        match next_round(store, workflows, clock).await? {
            0 => return Ok(handled),
            n => handled += n,
        }
    }
}

/// Handles every event after the cursor without flushing: for the in-memory
/// store of `simulate` and `test`, where there is nothing to make durable.
pub fn drain_now<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let mut handled = 0;
    loop {
        match handle_next_round(store, workflows, clock)? {
            0 => return Ok(handled),
            n => handled += n,
        }
    }
}

/// Handles up to one round of events after the cursor, commits and flushes
/// it; answers how many events it handled (0 when the log is caught up).
async fn next_round<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let handled = handle_next_round(store, workflows, clock)?;
    if handled > 0 {
        store.flush().await?;
    }
    Ok(handled)
}

/// Handles and commits up to one round of events after the cursor.
fn handle_next_round<S: Store>(
    store: &S,
    workflows: &Workflows,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let events = store.events_after(store.cursor()?, BATCH)?;
    if events.is_empty() {
        return Ok(0);
    }
    // The engine is CPU work: keep it off the threads serving requests.
    run_blocking(|| handle_round(store, workflows, clock, &events))?;
    Ok(events.len())
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
        let changes = engine::handle(event, workflows, &round, clock.now())?;
        round.absorb(changes)?;
    }
    let changes = round.into_changes();
    // Counted before the commit (no copy of the runs on this hot path); a
    // failed commit, which is retried, counts its runs twice.
    crate::telemetry::runs_committed(&changes.runs);
    store.commit(changes)
}

/// Runs blocking work without stalling the async runtime's other tasks
/// (on a current-thread runtime, as in tests and `simulate`, it just runs).
fn run_blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
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
    wake: Arc<Notify>,
    commands: mpsc::Sender<Command>,
    handled: watch::Receiver<u64>,
}

impl WorkerHandle {
    /// Tells the worker new events are in the log.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends a command and waits for its answer.
    pub async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| StoreError::Backend("the engine worker has stopped".to_owned()))
    }

    /// Waits until the event at `seq` has been handled.
    pub async fn handled(&self, seq: u64) {
        let mut rx = self.handled.clone();
        let _ = rx.wait_for(|done| *done >= seq).await;
    }
}

/// Starts the worker; it stops when `cancel` fires, after its current round.
pub fn spawn<S: Store>(
    store: Arc<S>,
    workflows: Arc<arc_swap::ArcSwap<Workflows>>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
    let wake = Arc::new(Notify::new());
    let (commands, mut inbox) = mpsc::channel(64);
    let initial = store.cursor().unwrap_or(0);
    let (progress, handled) = watch::channel(initial);
    let handle = WorkerHandle {
        wake: wake.clone(),
        commands,
        handled,
    };
    let task = tokio::spawn(async move {
        let mut next_prune = clock.now();
        loop {
            let snapshot = workflows.load_full();
            if let Err(e) = scheduler::fire_due(store.as_ref(), &snapshot, clock.now()) {
                tracing::error!(error = %e, "Firing due timers failed; retrying in a second.");
            }
            if clock.now() >= next_prune {
                next_prune = prune(store.as_ref(), &snapshot, clock.as_ref());
            }
            let handled = match next_round(store.as_ref(), &snapshot, clock.as_ref()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "Handling events failed; retrying in a second.");
                    0
                }
            };
            let cursor = store.cursor().unwrap_or(0);
            let _ = progress.send(cursor);
            if handled > 0 {
                // One line per batch: a sign of life an operator can follow
                // without a line per event under load.
                tracing::info!(events = handled, through = cursor, "Handled events.");
                // Commands wait at most one round, however busy the log is.
                while let Ok(command) = inbox.try_recv() {
                    run_command(store.as_ref(), &workflows, clock.as_ref(), command).await;
                }
                if cancel.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                Some(command) = inbox.recv() => run_command(store.as_ref(), &workflows, clock.as_ref(), command).await,
                _ = tokio::time::sleep(idle_wait(store.as_ref(), &snapshot, clock.as_ref())) => {}
            }
        }
        tracing::info!("Engine worker stopped.");
    });
    (handle, task)
}

/// Forgets runs past `settings.keep_runs`; answers when to do it next.
fn prune<S: Store>(store: &S, workflows: &Workflows, clock: &dyn Clock) -> DateTime<Utc> {
    let keep = workflows.settings.keep_runs;
    let now = clock.now();
    let done = run_blocking(|| retention::prune_runs(store, keep, now)).unwrap_or_else(|e| {
        tracing::error!(error = %e, "Pruning old runs failed; trying again later.");
        retention::Pruned {
            runs: 0,
            more: false,
        }
    });
    if done.runs > 0 {
        tracing::debug!(runs = done.runs, "Forgot runs past settings.keep_runs.");
    }
    retention::next_prune(now, keep, done)
}

/// How long the worker may sleep: until the next timer or schedule slot is
/// due, at most a second (timers are only added by this worker, so it never
/// misses an earlier one; the cap bounds the delay of anything unforeseen).
fn idle_wait<S: Store>(store: &S, workflows: &Workflows, clock: &dyn Clock) -> Duration {
    let now = clock.now();
    let until_due = match scheduler::next_due(store, workflows, now) {
        Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO),
        Ok(None) | Err(_) => IDLE_POLL,
    };
    until_due.min(IDLE_POLL)
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
    let moves = crate::reload::migrate::plan(&old, &new, store).map_err(|e| e.to_string())?;
    let now = clock.now();
    let mut changes = crate::store::Changes::default();
    for (enrollment, to) in &moves {
        changes.append(engine::sequence::move_enrollment(enrollment, to, now));
    }
    if !moves.is_empty() {
        store.commit(changes).map_err(|e| e.to_string())?;
        store.flush().await.map_err(|e| e.to_string())?;
    }
    workflows.store(new);
    Ok(moves.len())
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
        event_type: "stage.move_requested".to_owned(),
        record: record.clone(),
        fields: Default::default(),
        data: serde_json::Map::from_iter([("to".to_owned(), serde_json::Value::from(to))]),
        occurred_at: now,
        depth: 0,
    };
    let (result, changes) = engine::move_stage(record, to, &request, workflows, store, now)?;
    store.commit(changes)?;
    store.flush().await?;
    Ok(result)
}
