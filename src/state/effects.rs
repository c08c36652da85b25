//! What one event's handling changes: the engine answers it, and the store
//! commits it (the worker hands one to the other). It lives here, with the
//! other durable types, because both must know it and neither may know the
//! other.

use super::{
    Enrollment, NewEvent, OutboxEntry, Record, RecordKey, Run, ScoreNotes, StageVisit, Suppression,
    Task, Timer,
};
use chrono::{DateTime, Utc};

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
