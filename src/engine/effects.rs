//! What the engine answers, and the one way a read of state can fail it.
//!
//! Both are the engine's own: it answers [`Effects`] that the caller turns
//! into one atomic commit, and it reads through [`super::StateView`], whose
//! failures are [`ReadError`]s. Neither names the store, so the engine
//! depends on no storage, and a storage change never reaches it.

use crate::state::{
    Enrollment, NewEvent, OutboxEntry, Record, RecordKey, Run, ScoreNotes, StageVisit, Suppression,
    Task, Timer,
};
use chrono::{DateTime, Utc};
use std::error::Error;
use std::sync::Arc;

/// Everything one event's handling changes, to be committed at once.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Records to write.
    pub records: Vec<Record>,
    /// Stage visits to write: (record, index in its history, visit).
    pub stage_visits: Vec<(RecordKey, u64, StageVisit)>,
    /// Tasks to write.
    pub tasks: Vec<Task>,
    /// Outbox rows to write.
    pub outbox: Vec<OutboxEntry>,
    /// Timers to add.
    pub timers: Vec<Timer>,
    /// Timers to delete: (due, id).
    pub timers_done: Vec<(DateTime<Utc>, String)>,
    /// Enrollments to write.
    pub enrollments: Vec<Enrollment>,
    /// Runs to record.
    pub runs: Vec<Run>,
    /// Counters to set.
    pub counters: Vec<(String, u64)>,
    /// Addresses to suppress.
    pub suppress: Vec<Suppression>,
    /// Score contributions to record.
    pub ledger: Vec<ScoreNotes>,
    /// Events raised.
    pub events: Vec<NewEvent>,
    /// The event these effects finish (moves the cursor).
    pub handled: Option<u64>,
}

impl Effects {
    /// Adds another event's effects after these.
    pub fn append(&mut self, other: Effects) {
        self.records.extend(other.records);
        self.stage_visits.extend(other.stage_visits);
        self.tasks.extend(other.tasks);
        self.outbox.extend(other.outbox);
        self.timers.extend(other.timers);
        self.timers_done.extend(other.timers_done);
        self.enrollments.extend(other.enrollments);
        self.runs.extend(other.runs);
        self.counters.extend(other.counters);
        self.suppress.extend(other.suppress);
        self.ledger.extend(other.ledger);
        self.events.extend(other.events);
        self.handled = other.handled.or(self.handled);
    }
}

/// Reading state failed, so the event is not handled: the caller tries it
/// again, or sets it aside when the failure is about the data itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct ReadError {
    /// What the state's owner said, kept whole for the caller.
    cause: Arc<dyn Error + Send + Sync>,
    /// Whether trying again cannot help (a value that does not decode).
    about_data: bool,
}

impl ReadError {
    /// A failed read, caused by `cause`; `about_data` when retrying cannot
    /// help.
    pub fn new(cause: impl Error + Send + Sync + 'static, about_data: bool) -> Self {
        ReadError {
            cause: Arc::new(cause),
            about_data,
        }
    }

    /// Whether the failure is about the data, so retrying cannot help.
    pub fn is_about_data(&self) -> bool {
        self.about_data
    }

    /// The state owner's own error.
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.cause.as_ref()
    }
}
