//! Durable state behind small per-table traits.
//!
//! The table logic is written once ([`KvStore`]) over an ordered key-value
//! [`Backend`]: fjall on disk ([`FjallBackend`], opened by [`open_disk`],
//! which first moves a store of the sled engine earlier versions used) or
//! a map in memory ([`MemoryBackend`], for `simulate` and tests). One
//! conformance suite runs against both. No backend type crosses these traits, so a PostgreSQL
//! backend is an addition, not a rewrite. Every change of one event's
//! handling is one atomic [`Changes`] commit; [`Store::flush`] makes it
//! durable before anything is acknowledged.
//!
//! Blocking from async code, one policy: a read of one key or one page runs
//! inline (from the engine's memtable and block cache); work that reads whole tables runs
//! on the blocking pool (`api::extract::blocking`); the writers behind the
//! requests (engine worker, delivery, mailboxes) work inline on the
//! daemon's background thread, which serves no request (`cli::background`);
//! a flush runs on the blocking pool (the disk backends' group flush),
//! never on an async worker thread.
//!
//! Owns: keys, encodings, indexes, format upgrades ([`migrations`]),
//! where due-ordered scans start ([`due_floors`]) and which tables each
//! writer may write (`writes`: one write-set type per writer); it rings
//! the loops that wait for commits ([`Wakeups`]). Never: decides what to
//! write (callers do) or depends on the engine, the worker or the API.

mod backend;
pub mod backup;
pub mod check;
mod commit;
mod enrollments;
mod events;
mod forecasts;
mod history;
mod keys;
mod kv;
mod ledger;
mod mailboxes;
mod memory;
mod migrations;
mod outbox;
mod recent_events;
mod record_cache;
mod records;
mod rejected;
mod runs;
mod sled_backend;
mod sled_to_fjall;
mod suppressions;
mod tasks;
mod timers;
mod writes;

#[cfg(test)]
mod conformance;
mod disk;
mod due_floors;
mod fjall_backend;

pub use backend::{Backend, KvWrite};
pub use disk::DEFAULT_CACHE_MIB;
pub use fjall_backend::FjallBackend;
pub use kv::KvStore;
pub use memory::MemoryBackend;
pub use record_cache::DEFAULT_RECORDS_KEPT;
pub use sled_backend::SledBackend;
pub use sled_to_fjall::open_disk;
pub use writes::{DeliveryWrites, FiringWrites, ForecastWrites, IntakeWrites, PruneWrites};

pub use crate::state::{Page, for_each_item};

use crate::state::{
    Delivery, Effects, Enrollment, Event, ForecastSnapshot, MailboxPosition, NewEvent, OutboxEntry,
    OutboxStatus, Receipt, Record, RecordKey, RejectedPayload, Run, ScoreEntry, SetAsideEvent,
    SetAsideTimer, StageVisit, Suppression, Task, TaskStatus, Timer,
};
use chrono::{DateTime, Utc};
use std::future::Future;

/// Every storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data on disk cannot be read; dealflow refuses to start over it.
    #[error(
        "the store at {path} is corrupt or unreadable ({reason}); dealflow will not start over it. Keep the folder for inspection (`dealflow check --data` on its parent names what is wrong, `--repair` rebuilds indexes), restore the data folder from a backup (`dealflow restore`, docs/operations.md), or move the folder aside to start empty"
    )]
    Corrupt {
        /// Where.
        path: String,
        /// What the backend said.
        reason: String,
    },
    /// The store was written in a format this version cannot read.
    #[error(
        "the store at {path} has format {found:?}, which this version of dealflow cannot read (it reads {expected:?} and upgrades from the formats before it that were released); use the dealflow that wrote it, or restore a backup made by this version"
    )]
    Format {
        /// Where.
        path: String,
        /// The format mark found.
        found: String,
        /// The format this build writes.
        expected: String,
    },
    /// Another process (a second daemon) has the store open.
    #[error(
        "the store at {path} is in use by another dealflow process (is a daemon already running with this --data?); stop it, or give this one another --data"
    )]
    InUse {
        /// Where.
        path: String,
    },
    /// The backend failed (disk full, permissions, ...), with its cause.
    #[error("storage failed: {what}{}", cause_text(.source))]
    Backend {
        /// What was being done.
        what: String,
        /// The backend's own error, kept for the log and for callers that
        /// look down the chain.
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A part of the daemon a request needs has stopped: it is shutting down.
    #[error("{0} has stopped (the daemon is shutting down)")]
    Stopped(&'static str),
    /// A value could not be encoded for storage.
    #[error("a value cannot be stored: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// A stored value could not be decoded.
    #[error("stored value under {key} cannot be decoded: {reason}")]
    Decode {
        /// The key, printable.
        key: String,
        /// Why.
        reason: String,
    },
}

/// `: CAUSE` after a backend error's own words, when it has a cause.
fn cause_text(source: &Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>) -> String {
    source
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

impl StoreError {
    /// A backend failure doing `what`, caused by `source`.
    pub fn backend(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            what: what.into(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// Whether the disk (or a quota) is full, found by the kind of an I/O
    /// error in the cause chain.
    pub fn is_disk_full(&self) -> bool {
        let StoreError::Backend {
            source: Some(source),
            ..
        } = self
        else {
            return false;
        };
        crate::causes::caused_by::<std::io::Error>(source.as_ref()).is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::QuotaExceeded
                    | std::io::ErrorKind::FileTooLarge
            )
        })
    }

    /// A backend failure with no cause beyond these words.
    pub fn backend_said(what: impl Into<String>) -> Self {
        StoreError::Backend {
            what: what.into(),
            source: None,
        }
    }

    /// Whether the error is about the data itself (a value that cannot be
    /// encoded or decoded), so trying again cannot help, unlike a disk.
    pub fn is_about_data(&self) -> bool {
        matches!(self, StoreError::Encode { .. } | StoreError::Decode { .. })
    }
}

/// The result of appending one event to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The event's id (given or generated).
    pub id: String,
    /// Its place in the log (the earlier one for a duplicate).
    pub seq: u64,
    /// Whether the id was seen before (nothing was stored).
    pub duplicate: bool,
}

/// A mark of the log: every event with a sequence number below `seq` was
/// stored at or before `at`. The log's order is the order events were
/// stored in, so a mark dates every event before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventMark {
    /// When the mark was made.
    pub at: DateTime<Utc>,
    /// The next sequence number then.
    pub seq: u64,
}

/// A row of the log as retention sees it: its key and its events' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The sequence number the row is stored under (its first event's).
    pub first: u64,
    /// Its last event's sequence number.
    pub last: u64,
    /// Each event's (sequence number, id).
    pub ids: Vec<(u64, String)>,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this owner's (`Some("")` lists unassigned tasks).
    pub owner: Option<String>,
    /// Only in this status.
    pub status: Option<TaskStatus>,
    /// Only this record's.
    pub record: Option<RecordKey>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only for this record.
    pub record: Option<RecordKey>,
    /// Only of this rule.
    pub rule: Option<String>,
}

/// The event log: durable, deduplicated, read in order.
pub trait EventTable {
    /// Appends events atomically, skipping ids seen before.
    fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError>;
    /// Events after `seq`, in order, at most `limit`.
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The last event the engine finished with.
    fn cursor(&self) -> Result<u64, StoreError>;
    /// The last event stored.
    fn last_seq(&self) -> Result<u64, StoreError>;
    /// The latest mark made at or before `at`.
    fn event_mark_before(&self, at: DateTime<Utc>) -> Result<Option<EventMark>, StoreError>;
    /// The marks made before `at`, oldest first, at most `limit`.
    fn event_marks_before(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMark>, StoreError>;
    /// The oldest rows of the log, at most `limit`.
    fn oldest_event_rows(&self, limit: usize) -> Result<Vec<EventRow>, StoreError>;
}

/// Records.
pub trait RecordTable {
    /// One record.
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, StoreError>;
    /// Records of a kind, a page at a time.
    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, StoreError>;
}

/// Stage history.
pub trait StageHistoryTable {
    /// Every stage visit of a record, oldest first.
    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, StoreError>;
    /// Every record's history, one record at a time (reports), without
    /// holding more than one page of visits in memory.
    fn each_stage_history(
        &self,
        visit: &mut dyn FnMut(RecordKey, Vec<StageVisit>),
    ) -> Result<(), StoreError>;
}

/// Tasks.
pub trait TaskTable {
    /// One task.
    fn task(&self, id: &str) -> Result<Option<Task>, StoreError>;
    /// Tasks matching a filter, a page at a time.
    fn tasks(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Task>, StoreError>;
    /// Open tasks of a person (least-loaded assignment).
    fn open_task_count(&self, owner: &str) -> Result<usize, StoreError>;
}

/// Which outbox rows to list.
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Only in this status.
    pub status: Option<OutboxStatus>,
    /// Only this record's.
    pub record: Option<RecordKey>,
}

/// Deliveries waiting or done.
pub trait OutboxTable {
    /// Every row, by id, a page at a time.
    fn outbox(&self, after: Option<&str>, limit: usize) -> Result<Page<OutboxEntry>, StoreError>;
    /// Rows matching a filter, by id, a page at a time.
    fn outbox_matching(
        &self,
        filter: &OutboxFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<OutboxEntry>, StoreError>;
    /// One row.
    fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError>;
    /// Rows waiting whose time has come, earliest first.
    fn due_outbox(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// When the earliest waiting row is due.
    fn next_outbox_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// How many rows wait for delivery (due or not), counting at most `limit`.
    fn waiting_outbox(&self, limit: usize) -> Result<usize, StoreError>;
    /// Rows marked as being handed over (after a crash: interrupted sends).
    fn sending_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The record last texted at a number (E.164), if any was.
    fn texted(&self, phone: &str) -> Result<Option<RecordKey>, StoreError>;
}

/// Timers, ordered by due time.
pub trait TimerTable {
    /// Timers due at or before `now`, earliest first; a row that does not
    /// decode comes as the set-aside row it should become (dated `now`),
    /// so one damaged timer does not stop the others.
    fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Result<Timer, SetAsideTimer>>, StoreError>;
    /// When the earliest timer is due, to know how long to sleep.
    fn next_timer(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// How many timers wait, counting at most `limit`.
    fn pending_timers(&self, limit: usize) -> Result<usize, StoreError>;
}

/// Sequence enrollments.
pub trait EnrollmentTable {
    /// A record's enrollments.
    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, StoreError>;
    /// Every enrollment, a page at a time (reports).
    fn all_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError>;
    /// Every active enrollment, a page at a time (reload checks them all).
    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError>;
}

/// Run history.
pub trait RunTable {
    /// Runs matching a filter, newest first, a page at a time.
    fn runs(
        &self,
        filter: &RunFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Run>, StoreError>;
    /// Rows of runs in id order (the log order of their events), after the
    /// row `after`, at most `limit` (retention).
    fn run_rows_in_log_order(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError>;
}

/// The runs one commit wrote for one event, stored and forgotten together.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The row's id: its least run id.
    pub id: String,
    /// When its runs ran.
    pub at: DateTime<Utc>,
    /// How many runs it holds.
    pub runs: usize,
    /// The record its runs are about.
    pub record: RecordKey,
}

/// Addresses that must never be emailed.
pub trait SuppressionTable {
    /// Whether an address (any spelling) is suppressed.
    fn is_suppressed(&self, email: &str) -> Result<bool, StoreError>;

    /// The suppression of an address (any spelling), if there is one.
    fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError>;

    /// Suppressions by address, at most `limit` after the `after` cursor.
    fn suppressions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError>;
}

/// Every contribution to every score.
pub trait ScoreLedgerTable {
    /// A record's entries for one model, newest first, at most `limit`,
    /// older than the `before` cursor of a previous page.
    fn score_ledger(
        &self,
        key: &RecordKey,
        model: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page<ScoreEntry>, StoreError>;
}

/// Events the engine and timers the scheduler set aside.
pub trait SetAsideTable {
    /// The latest set-aside events, newest first, at most `limit`.
    fn set_aside_events(&self, limit: usize) -> Result<Vec<SetAsideEvent>, StoreError>;
    /// How many events were set aside, counting at most `limit`.
    fn set_aside_count(&self, limit: usize) -> Result<usize, StoreError>;
    /// Timers set aside, newest due first, at most `limit`.
    fn set_aside_timers(&self, limit: usize) -> Result<Vec<SetAsideTimer>, StoreError>;
    /// How many timers are set aside, counting at most `limit`.
    fn set_aside_timer_count(&self, limit: usize) -> Result<usize, StoreError>;
}

/// Payloads sources could not map (SPEC §3.10), kept to be replayed.
pub trait RejectedPayloadTable {
    /// A source's kept payloads, oldest first, a page at a time.
    fn rejected_payloads(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RejectedPayload>, StoreError>;
    /// One kept payload.
    fn rejected_payload(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<RejectedPayload>, StoreError>;
    /// How many payloads a source has kept, counting at most `limit`.
    fn rejected_count(&self, source: &str, limit: usize) -> Result<usize, StoreError>;
}

/// Where each IMAP mailbox was read up to.
pub trait MailboxPositionTable {
    /// A mailbox's position, if it was ever read.
    fn mailbox_position(&self, name: &str) -> Result<Option<MailboxPosition>, StoreError>;
}

/// Daily snapshots of each forecasting pipeline's weighted forecast.
pub trait ForecastTable {
    /// The snapshot of `pipeline` taken on `day`, or else the latest one
    /// before it (a day the daemon did not run has none).
    fn forecast_on_or_before(
        &self,
        pipeline: &str,
        day: chrono::NaiveDate,
    ) -> Result<Option<ForecastSnapshot>, StoreError>;
}

/// Named counters (round-robin positions).
pub trait CounterTable {
    /// A counter's value (0 if never set).
    fn counter(&self, name: &str) -> Result<u64, StoreError>;
}

/// Everything one commit changes, at once. Only the store fills or reads
/// its fields: writers build their own write sets (the engine's `Effects`,
/// `DeliveryWrites`, ...: one type per writer, in `store/writes.rs`) and
/// convert them into this.
#[derive(Debug, Default)]
pub struct Changes {
    /// What the engine decided; other writers add to some of its tables
    /// (outbox rows, events, suppressions, runs, counters).
    pub(in crate::store) round: Effects,
    /// Events the engine could not handle, set aside.
    pub(in crate::store) set_aside: Vec<SetAsideEvent>,
    pub(in crate::store) set_aside_timers: Vec<SetAsideTimer>,
    /// Rows of runs to forget (past `settings.keep_runs`), by row id.
    pub(in crate::store) runs_pruned: Vec<String>,
    /// Addresses to take off the suppression list (any spelling).
    pub(in crate::store) unsuppress: Vec<String>,
    /// Payloads a source could not map, kept (or kept again, with a new reason).
    pub(in crate::store) rejected: Vec<RejectedPayload>,
    /// Kept payloads replayed: (source, id).
    pub(in crate::store) replayed: Vec<(String, String)>,
    /// Mailbox positions reached by the messages behind the events.
    pub(in crate::store) mailbox_positions: Vec<MailboxPosition>,
    /// Forecast snapshots taken.
    pub(in crate::store) forecasts: Vec<ForecastSnapshot>,
    /// Delivery receipts of texts: (outbox row id, receipt).
    pub(in crate::store) receipts: Vec<(String, Receipt)>,
    /// Marks of the log to write.
    pub(in crate::store) event_marks: Vec<EventMark>,
    /// Marks of the log to forget, by time.
    pub(in crate::store) event_marks_pruned: Vec<DateTime<Utc>>,
    /// Rows of handled events to forget (past `settings.keep_events`),
    /// with the deduplication entries that point at their events.
    pub(in crate::store) event_rows_pruned: Vec<EventRow>,
    /// Events of due timers, appended after the round's events. The
    /// timer's deletion in the same commit is what makes each fire once, so
    /// their ids (the timers') skip the idempotency index that outside
    /// events go through: at a million pending timers that index was half
    /// of firing's cost.
    pub(in crate::store) fired: Vec<NewEvent>,
}

impl Changes {
    /// About how many key writes these make (a row and its index keys
    /// each), so the batch is allocated once: growing it as the tables
    /// staged was 1% of the daemon's CPU under W1.
    pub(in crate::store) fn writes_estimate(&self) -> usize {
        let r = &self.round;
        let rows = r.records.len()
            + r.tasks.len()
            + r.outbox.len()
            + r.timers.len()
            + r.timers_done.len()
            + r.enrollments.len()
            + r.runs.len()
            + r.events.len()
            + self.fired.len();
        4 * rows + r.counters.len() + 8
    }

    /// Adds another set of changes after these.
    pub(in crate::store) fn append(&mut self, other: Changes) {
        self.round.append(other.round);
        self.set_aside.extend(other.set_aside);
        self.set_aside_timers.extend(other.set_aside_timers);
        self.runs_pruned.extend(other.runs_pruned);
        self.unsuppress.extend(other.unsuppress);
        self.rejected.extend(other.rejected);
        self.replayed.extend(other.replayed);
        self.mailbox_positions.extend(other.mailbox_positions);
        self.forecasts.extend(other.forecasts);
        self.receipts.extend(other.receipts);
        self.event_marks.extend(other.event_marks);
        self.event_marks_pruned.extend(other.event_marks_pruned);
        self.event_rows_pruned.extend(other.event_rows_pruned);
        self.fired.extend(other.fired);
    }
}

/// Rings the loops that read what commits write: the engine worker when
/// events are appended, delivery when outbox rows are written. The store
/// rings them itself, after the write, so no writer can forget to, and the
/// loops sleep until something happens instead of polling.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// New events are in the log.
    pub events: tokio::sync::Notify,
    /// Outbox rows were written (new, retried, cancelled or recorded).
    pub outbox: tokio::sync::Notify,
    /// How many commits were applied: what the console's live pages and
    /// cached figures watch (any number of watchers, none missed).
    pub commits: tokio::sync::watch::Sender<u64>,
}

/// All tables, one atomic commit, and a flush.
pub trait Store:
    EventTable
    + RecordTable
    + StageHistoryTable
    + TaskTable
    + OutboxTable
    + TimerTable
    + EnrollmentTable
    + RunTable
    + SuppressionTable
    + CounterTable
    + ScoreLedgerTable
    + SetAsideTable
    + RejectedPayloadTable
    + MailboxPositionTable
    + ForecastTable
    + Send
    + Sync
    + 'static
{
    /// Applies all changes atomically (all or none).
    fn commit(&self, changes: Changes) -> Result<(), StoreError>;
    /// Makes everything committed so far survive a process crash.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The same, for a writer no request waits on: a flush another writer
    /// starts within a moment covers its commits first, so it does not
    /// queue a sync ahead of the API's.
    fn flush_soon(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.flush()
    }
    /// Bytes on disk (0 in memory).
    fn size_on_disk(&self) -> u64;
    /// Why the store can no longer write until it is opened again, if so.
    fn write_failure(&self) -> Option<String> {
        None
    }
    /// What commits ring.
    fn wakeups(&self) -> &Wakeups;
    /// Writes a consistent backup of the whole store to `out` while
    /// writers go on (see [`backup`]).
    fn backup_to(
        &self,
        out: &mut dyn std::io::Write,
        unsubscribe_key: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<backup::BackupSummary, backup::BackupError>;
}
