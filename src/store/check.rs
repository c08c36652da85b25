//! `dealflow check` (SPEC §9): reads every table of a stopped store and
//! verifies each index against the rows it points at; with `repair`,
//! rebuilds the indexes that are derived from rows alone (tasks' open and
//! owner indexes, the outbox's due, sending and by-record indexes) and drops
//! event-id entries that point at no event. Rows themselves are never
//! changed: a row that does not decode is reported for a person to decide.

use super::backend::{Backend, KvWrite};
use super::kv::{KvStore, decode_value};
use super::tasks::{OPEN_TASK, OWNER_TASK, open_task_key, owner_task_key};
use super::*;
use crate::state::{SetAsideEvent, Timer};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Index fixes applied at a time.
const CHUNK: usize = 1000;

/// One thing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table or index.
    pub table: &'static str,
    /// The key, printable.
    pub key: String,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.table, self.key, self.what)
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Entries read, by table.
    pub counts: BTreeMap<&'static str, u64>,
    /// Everything wrong (before any repair).
    pub problems: Vec<Problem>,
    /// Index entries rewritten or removed by `repair`.
    pub repaired: u64,
    /// Bytes of every key and value read: what the store holds, against
    /// which its size on disk shows the backend's space amplification.
    pub bytes: u64,
}

/// The tables and indexes, by key prefix.
const TABLES: &[(&[u8], &str)] = &[
    (keys::EVENT, "events"),
    (keys::EVENT_ID, "event ids"),
    (b"meta\0", "meta"),
    (keys::RECORD, "records"),
    (keys::STAGE_HISTORY, "stage history"),
    (keys::TASK, "tasks"),
    (OPEN_TASK, "open-task index"),
    (OWNER_TASK, "owner-task index"),
    (keys::OUTBOX, "outbox"),
    (keys::OUTBOX_BY_RECORD, "outbox by-record index"),
    (keys::OUTBOX_DUE, "outbox due index"),
    (keys::OUTBOX_SENDING, "outbox sending index"),
    (keys::TIMER, "timers"),
    (keys::ENROLLMENT, "enrollments"),
    (keys::RUN, "runs"),
    (keys::RUN_BY_RECORD, "runs by-record index"),
    (keys::SUPPRESSED, "suppressions"),
    (keys::COUNTER, "counters"),
    (keys::SCORE_LEDGER, "score ledger"),
    (keys::SET_ASIDE, "set-aside events"),
    (keys::SET_ASIDE_TIMER, "set-aside timers"),
    (keys::MAILBOX, "mailbox positions"),
    (keys::REJECTED, "kept payloads"),
    (keys::FORECAST, "forecast snapshots"),
    (keys::TEXTED, "texted numbers"),
    (keys::RECEIPT, "text receipts"),
    (keys::EVENT_MARK, "event marks"),
];

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

impl<B: Backend> KvStore<B> {
    /// Checks every table and index; with `repair`, rebuilds derived
    /// indexes. Fails only when the store cannot be read at all.
    pub fn check(&self, repair: bool) -> Result<Report, StoreError> {
        let mut checker = Checker::default();
        self.each_entry(|key, value| {
            checker.report.bytes += (key.len() + value.len()) as u64;
            checker.entry(key, value);
            Ok::<(), StoreError>(())
        })?;
        let fixes = checker.cross_check();
        let mut report = checker.report;
        if repair && !fixes.is_empty() {
            report.repaired = fixes.len() as u64;
            for batch in fixes.chunks(CHUNK) {
                self.apply_batch(batch.to_vec())?;
            }
        }
        Ok(report)
    }
}

/// What the scan remembers to cross-check indexes against rows.
#[derive(Default)]
struct Checker {
    report: Report,
    /// Event sequence number → its id.
    events: HashMap<u64, String>,
    /// Event-id index: id → the sequence number it names.
    event_ids: Vec<(Vec<u8>, String, u64)>,
    tasks: HashMap<String, Task>,
    /// Task index entries: key, index, task id.
    task_index: Vec<(Vec<u8>, &'static str, String)>,
    outbox: HashMap<String, OutboxEntry>,
    /// Outbox index entries: key, index, row id.
    outbox_index: Vec<(Vec<u8>, &'static str, String)>,
    run_rows: HashSet<String>,
    run_index: Vec<(Vec<u8>, String)>,
    /// Timers: id → key.
    timers: HashMap<String, Vec<u8>>,
    /// Enrollments waiting on a timer: key, enrollment.
    waiting: Vec<(Vec<u8>, Enrollment)>,
    /// The last handled event, and the next sequence number.
    cursor: u64,
    next_seq: Option<u64>,
}

impl Checker {
    fn problem(&mut self, table: &'static str, key: &[u8], what: impl Into<String>) {
        self.report.problems.push(Problem {
            table,
            key: printable(key),
            what: what.into(),
        });
    }

    fn decodes<T: serde::de::DeserializeOwned>(
        &mut self,
        table: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Option<T> {
        match decode_value::<T>(key, value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(table, key, format!("does not decode: {e}"));
                None
            }
        }
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) {
        let Some((prefix, table)) = TABLES.iter().find(|(p, _)| key.starts_with(p)) else {
            self.problem("store", key, "a key no table of dealflow writes");
            return;
        };
        *self.report.counts.entry(table).or_default() += 1;
        let rest = &key[prefix.len()..];
        let text = String::from_utf8_lossy(rest).into_owned();
        match *prefix {
            p if p == keys::EVENT => match events::decode(key, value) {
                Ok(row) => self.events.extend(row.into_iter().map(|e| (e.seq, e.id))),
                Err(e) => self.problem(table, key, format!("does not decode: {e}")),
            },
            p if p == keys::EVENT_ID => match keys::read_u64(value) {
                Some(seq) => self.event_ids.push((key.to_vec(), text, seq)),
                None => self.problem(table, key, "does not hold a sequence number"),
            },
            p if p == keys::RECORD => {
                self.decodes::<Record>(table, key, value);
            }
            p if p == keys::STAGE_HISTORY => {
                if let Err(e) = history::decode(key, value) {
                    self.problem(table, key, format!("does not decode: {e}"));
                }
            }
            p if p == keys::TASK => {
                if let Some(task) = self.decodes::<Task>(table, key, value) {
                    self.tasks.insert(task.id.clone(), task);
                }
            }
            p if p == OPEN_TASK || p == OWNER_TASK => match keys::split_parts(rest, 1) {
                Some((_, id)) => self.task_index.push((key.to_vec(), table, lossy(id))),
                None => self.problem(table, key, "is not OWNER/ID"),
            },
            p if p == keys::OUTBOX => {
                if let Some(row) = self.decodes::<OutboxEntry>(table, key, value) {
                    self.outbox.insert(row.id.clone(), row);
                }
            }
            p if p == keys::OUTBOX_DUE => match rest.get(8..) {
                Some(id) => self.outbox_index.push((
                    key.to_vec(),
                    table,
                    String::from_utf8_lossy(id).into_owned(),
                )),
                None => self.problem(table, key, "has no due time"),
            },
            p if p == keys::OUTBOX_SENDING => self.outbox_index.push((key.to_vec(), table, text)),
            p if p == keys::OUTBOX_BY_RECORD => match keys::split_parts(rest, 2) {
                Some((_, id)) => self.outbox_index.push((key.to_vec(), table, lossy(id))),
                None => self.problem(table, key, "is not KIND/ID/ROW"),
            },
            p if p == keys::TIMER => {
                if let Some(timer) = self.decodes::<Timer>(table, key, value) {
                    self.timers.insert(timer.id, key.to_vec());
                }
            }
            p if p == keys::ENROLLMENT => {
                let enrollment = self.decodes::<Enrollment>(table, key, value);
                if let Some(e) = enrollment.filter(|e| {
                    e.status == crate::state::EnrollmentStatus::Active && e.timer.is_some()
                }) {
                    self.waiting.push((key.to_vec(), e));
                }
            }
            p if p == keys::RUN => match runs::decode_head(key, value) {
                Ok(row) => {
                    self.run_rows.insert(row.id);
                }
                Err(e) => self.problem(table, key, format!("does not decode: {e}")),
            },
            p if p == keys::RUN_BY_RECORD => match keys::split_parts(rest, 2) {
                Some((_, row)) => self.run_index.push((key.to_vec(), lossy(row))),
                None => self.problem(table, key, "is not KIND/ID/ROW"),
            },
            p if p == keys::SET_ASIDE => {
                self.decodes::<SetAsideEvent>(table, key, value);
            }
            p if p == keys::SET_ASIDE_TIMER => {
                self.decodes::<crate::state::SetAsideTimer>(table, key, value);
            }
            p if p == keys::MAILBOX => {
                self.decodes::<MailboxPosition>(table, key, value);
            }
            p if p == keys::REJECTED => {
                self.decodes::<RejectedPayload>(table, key, value);
            }
            p if p == keys::FORECAST => {
                self.decodes::<crate::state::ForecastSnapshot>(table, key, value);
            }
            p if p == keys::TEXTED => {
                self.decodes::<crate::state::RecordKey>(table, key, value);
            }
            p if p == keys::RECEIPT => {
                self.decodes::<crate::state::Receipt>(table, key, value);
            }
            p if (p == keys::COUNTER || p == keys::EVENT_MARK)
                && keys::read_u64(value).is_none() =>
            {
                self.problem(table, key, "does not hold a number");
            }
            _ if key == keys::CURSOR => self.cursor = keys::read_u64(value).unwrap_or(0),
            _ if key == keys::NEXT_SEQ => self.next_seq = keys::read_u64(value),
            _ if key == keys::FORMAT && value != keys::FORMAT_VERSION => {
                let (found, wanted) = (printable(value), printable(keys::FORMAT_VERSION));
                self.problem(table, key, format!("is {found:?}, not {wanted:?}"));
            }
            _ => {}
        }
    }

    /// Indexes against rows; answers the writes that would rebuild them.
    fn cross_check(&mut self) -> Vec<KvWrite> {
        let mut fixes = Vec::new();
        for (key, id, seq) in std::mem::take(&mut self.event_ids) {
            match self.events.get(&seq) {
                Some(found) if *found == id => {}
                Some(found) => {
                    self.problem(
                        "event ids",
                        &key,
                        format!("names event {seq}, whose id is {found:?}"),
                    );
                    fixes.push(KvWrite::Delete(key));
                }
                None => {
                    self.problem(
                        "event ids",
                        &key,
                        format!("names event {seq}, which is not in the log"),
                    );
                    fixes.push(KvWrite::Delete(key));
                }
            }
        }
        self.check_tasks(&mut fixes);
        self.check_outbox(&mut fixes);
        self.check_timers(&mut fixes);
        for (key, row) in std::mem::take(&mut self.run_index) {
            if !self.run_rows.contains(&row) {
                self.problem(
                    "runs by-record index",
                    &key,
                    format!("names run row {row}, which is missing"),
                );
                fixes.push(KvWrite::Delete(key));
            }
        }
        fixes
    }

    fn check_tasks(&mut self, fixes: &mut Vec<KvWrite>) {
        let mut wanted: HashSet<Vec<u8>> = HashSet::new();
        for task in self.tasks.values() {
            let owner = task.owner.clone().unwrap_or_default();
            wanted.insert(owner_task_key(&owner, &task.id));
            if task.status == TaskStatus::Open {
                wanted.insert(open_task_key(&owner, &task.id));
            }
        }
        let found = std::mem::take(&mut self.task_index);
        self.reconcile("tasks", "task", &wanted, found, fixes);
    }

    /// Timers against what they serve (SPEC §6 "no missed timers"): every
    /// waiting enrollment's timer is stored or has fired into the part of
    /// the log the engine has not handled yet; a step or overdue timer
    /// serves a waiting enrollment or an open task (one that serves
    /// nothing would fire into nothing, and is removed by `repair`); the
    /// cursor is within the log.
    fn check_timers(&mut self, fixes: &mut Vec<KvWrite>) {
        let cursor = self.cursor;
        let unhandled: HashSet<&str> = self
            .events
            .iter()
            .filter(|(seq, _)| **seq > cursor)
            .map(|(_, id)| id.as_str())
            .collect();
        let mut referenced = HashSet::new();
        let mut missing = Vec::new();
        for (key, e) in &self.waiting {
            let Some(timer) = &e.timer else { continue };
            referenced.insert(timer.id.clone());
            if !self.timers.contains_key(&timer.id) && !unhandled.contains(timer.id.as_str()) {
                missing.push((
                    key.clone(),
                    format!(
                        "waits on timer {} (due {}), which is neither stored nor waiting in the log: the enrollment would never go on",
                        timer.id, timer.due_at
                    ),
                ));
            }
        }
        for (key, what) in missing {
            self.problem("enrollments", &key, what);
        }
        let mut orphans = Vec::new();
        for (id, key) in &self.timers {
            let serves = match crate::state::TimerKind::of(id) {
                Some((crate::state::TimerKind::Step, _)) => referenced.contains(id),
                Some((crate::state::TimerKind::Overdue, task)) => self
                    .tasks
                    .get(task)
                    .is_some_and(|t| t.status == TaskStatus::Open),
                _ => true,
            };
            if !serves {
                orphans.push(key.clone());
            }
        }
        for key in orphans {
            self.problem("timers", &key, "serves no waiting enrollment or open task");
            fixes.push(KvWrite::Delete(key));
        }
        if let Some(next) = self.next_seq
            && self.cursor >= next
        {
            let what = format!(
                "is event {}, past the log's end ({}): events stored next would never be handled",
                self.cursor,
                next.saturating_sub(1)
            );
            self.problem("meta", keys::CURSOR, what);
        }
    }

    fn check_outbox(&mut self, fixes: &mut Vec<KvWrite>) {
        let mut wanted: HashSet<Vec<u8>> = HashSet::new();
        for row in self.outbox.values() {
            wanted.insert(keys::outbox_by_record(&row.record, &row.id));
            wanted.extend(super::outbox::delivery_index_keys(
                row.status,
                row.due_at(),
                &row.id,
            ));
        }
        let found = std::mem::take(&mut self.outbox_index);
        self.reconcile("outbox", "outbox row", &wanted, found, fixes);
    }

    /// Index entries `found` against those the rows call for (`wanted`):
    /// each extra one is named and removed, each missing one named and
    /// written.
    fn reconcile(
        &mut self,
        rows: &'static str,
        row: &str,
        wanted: &HashSet<Vec<u8>>,
        found: Vec<(Vec<u8>, &'static str, String)>,
        fixes: &mut Vec<KvWrite>,
    ) {
        let mut present = HashSet::new();
        for (key, index, id) in found {
            if !wanted.contains(&key) {
                self.problem(index, &key, format!("does not match {row} {id}"));
                fixes.push(KvWrite::Delete(key.clone()));
            }
            present.insert(key);
        }
        for key in wanted.difference(&present) {
            self.problem(rows, key, "has no index entry here");
            fixes.push(KvWrite::Put(key.clone(), Vec::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RecordKey;
    use crate::store::MemoryBackend;
    use chrono::DateTime;

    fn store_with_a_task_and_an_event() -> KvStore<MemoryBackend> {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let record = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let task = Task {
            id: "t1".into(),
            record: record.clone(),
            title: "Call".into(),
            notes: None,
            owner: Some("ana@x.example".into()),
            due_at: None,
            status: TaskStatus::Open,
            created_at: DateTime::UNIX_EPOCH,
            completed_at: None,
            created_by: "rule".into(),
            step: None,
            from_handoff: false,
        };
        store
            .commit(Changes::from(crate::state::Effects {
                tasks: vec![task],
                events: vec![NewEvent {
                    id: Some("e1".into()),
                    event_type: "form.submitted".into(),
                    record,
                    fields: Default::default(),
                    data: Default::default(),
                    occurred_at: DateTime::UNIX_EPOCH,
                    depth: 0,
                }],
                ..crate::state::Effects::default()
            }))
            .unwrap();
        store
    }

    #[test]
    fn a_sound_store_has_no_problems() {
        let store = store_with_a_task_and_an_event();
        let report = store.check(false).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.counts.get("tasks"), Some(&1));
    }

    /// An enrollment of L1 waiting on a step timer, as the engine leaves it.
    fn waiting(store: &KvStore<MemoryBackend>) -> Timer {
        let record = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let due = DateTime::UNIX_EPOCH + chrono::Duration::days(3);
        let timer = Timer {
            id: crate::state::TimerKind::Step.id("lead/L1/cadence/0/1"),
            due_at: due,
            event: NewEvent {
                id: None,
                event_type: "sequence.step".into(),
                record: record.clone(),
                fields: Default::default(),
                data: Default::default(),
                occurred_at: due,
                depth: 0,
            },
        };
        let enrollment = Enrollment {
            next_step: Some("bump".into()),
            timer: Some(timer.reference()),
            next_at: Some(due),
            ..Enrollment::new(record, "cadence", DateTime::UNIX_EPOCH)
        };
        store
            .commit(Changes::from(crate::state::Effects {
                timers: vec![timer.clone()],
                enrollments: vec![enrollment],
                handled: Some(1),
                ..crate::state::Effects::default()
            }))
            .unwrap();
        timer
    }

    #[test]
    fn a_waiting_enrollment_without_its_timer_is_named() {
        let store = store_with_a_task_and_an_event();
        let timer = waiting(&store);
        assert!(store.check(false).unwrap().problems.is_empty());
        // Fired and not yet handled: still sound.
        store
            .commit(Changes {
                round: crate::state::Effects {
                    timers_done: vec![(timer.due_at, timer.id.clone())],
                    ..crate::state::Effects::default()
                },
                fired: vec![NewEvent {
                    id: Some(timer.id.clone()),
                    ..timer.event.clone()
                }],
                ..Changes::default()
            })
            .unwrap();
        let report = store.check(false).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // Handled, yet the enrollment still waits on it: never going on.
        store
            .commit(Changes::from(crate::state::Effects {
                handled: Some(2),
                ..crate::state::Effects::default()
            }))
            .unwrap();
        let report = store.check(false).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].what.contains("would never go on"));
    }

    #[test]
    fn timers_that_serve_nothing_are_named_and_removed_and_a_cursor_past_the_log() {
        let store = store_with_a_task_and_an_event();
        let mut orphan = waiting(&store);
        orphan.id = crate::state::TimerKind::Step.id("lead/L1/cadence/0/0");
        let mut overdue = orphan.clone();
        overdue.id = crate::state::TimerKind::Overdue.id("gone");
        store
            .commit(Changes::from(crate::state::Effects {
                timers: vec![orphan, overdue],
                handled: Some(5),
                ..crate::state::Effects::default()
            }))
            .unwrap();
        let report = store.check(true).unwrap();
        let said: Vec<&str> = report.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said.iter().filter(|w| w.contains("serves no")).count(), 2);
        assert!(
            said.iter().any(|w| w.contains("past the log's end")),
            "{said:?}"
        );
        assert_eq!(report.repaired, 2);
        let again = store.check(false).unwrap();
        assert_eq!(
            again.problems.len(),
            1,
            "only the cursor is left: {:?}",
            again.problems
        );
    }

    #[test]
    fn a_text_with_its_receipt_is_sound() {
        let store = store_with_a_task_and_an_event();
        crate::store::conformance::texts_keep_their_number_and_receipts_apart(&store);
        let report = store.check(false).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.counts.get("texted numbers"), Some(&1));
        assert_eq!(report.counts.get("text receipts"), Some(&1));
    }

    #[test]
    fn broken_indexes_are_named_and_repaired_and_bad_rows_named() {
        let store = store_with_a_task_and_an_event();
        store
            .backend
            .apply(vec![
                KvWrite::Delete(keys::join(&[OPEN_TASK, b"ana@x.example\0t1"])),
                KvWrite::Put(keys::event_id("ghost"), 99u64.to_be_bytes().to_vec()),
                KvWrite::Put(keys::task("t2"), vec![0xc1]),
                KvWrite::Put(b"zz\0stray".to_vec(), Vec::new()),
            ])
            .unwrap();
        let report = store.check(true).unwrap();
        let shown: Vec<String> = report.problems.iter().map(Problem::to_string).collect();
        for expected in [
            "tasks ot/ana@x.example/t1: has no index entry here",
            "event ids ei/ghost: names event 99, which is not in the log",
            "tasks tk/t2: does not decode",
            "store zz/stray: a key no table of dealflow writes",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(expected)),
                "{expected} not in {shown:#?}"
            );
        }
        assert_eq!(report.repaired, 2);
        let again = store.check(false).unwrap();
        let left: Vec<&str> = again.problems.iter().map(|p| p.table).collect();
        assert_eq!(
            left,
            ["tasks", "store"],
            "only the rows a person must decide on remain"
        );
    }
}
