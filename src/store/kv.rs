//! The tables, written once over any [`Backend`].

use super::backend::{Backend, KvWrite};
use super::events;
use super::history;
use super::keys;
use super::ledger;
use super::record_cache::{DEFAULT_RECORDS_KEPT, RecordCache};
use super::runs;
use super::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Event rows read at a time by `events_after`.
const ROWS_PER_READ: usize = 32;

/// Index of open tasks by owner, so least-loaded assignment does not scan.
const OPEN_TASK: &[u8] = b"ot\0";
/// Every task by owner (`""` for unassigned), for `/v1/tasks?owner=` of
/// any status.
const OWNER_TASK: &[u8] = b"ow\0";

/// The store: tables over a backend.
pub struct KvStore<B: Backend> {
    backend: B,
    /// Serializes writers: sequence numbers and deduplication need one
    /// writer at a time; reads never take it.
    /// Holds the next event sequence number once read, so appends do not
    /// read it from the backend every time.
    writer: Mutex<Option<u64>>,
    /// The records written last, decoded.
    records: RecordCache,
    wakeups: super::Wakeups,
}

/// Values are MessagePack with field names: self-describing like JSON (so
/// free-form record fields round-trip), about half the size and faster.
pub(super) fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode {
        reason: e.to_string(),
    })
}

pub(super) fn decode_value<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// How an event's id is treated when it is appended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// An id seen before makes the event a duplicate (outside events).
    Deduplicate,
    /// The id is unique by construction (a fired timer's).
    Unique,
}

fn open_task_key(owner: &str, id: &str) -> Vec<u8> {
    keys::join(&[OPEN_TASK, owner.as_bytes(), b"\0", id.as_bytes()])
}

pub(super) fn owner_task_key(owner: &str, id: &str) -> Vec<u8> {
    keys::join(&[OWNER_TASK, owner.as_bytes(), b"\0", id.as_bytes()])
}

impl<B: Backend> KvStore<B> {
    /// Opens the tables on a backend, checking the store's format mark so a
    /// store of another program or version is refused rather than misread.
    pub fn open(backend: B, path: &str) -> Result<Self, StoreError> {
        match backend.get(keys::FORMAT)? {
            Some(mark) => super::migrations::upgrade(&backend, mark, path)?,
            None => {
                if !backend.scan(b"", None, 1)?.is_empty() {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        reason: "it holds data but no dealflow format mark".to_owned(),
                    });
                }
                backend.apply(vec![KvWrite::Put(
                    keys::FORMAT.to_vec(),
                    keys::FORMAT_VERSION.to_vec(),
                )])?;
            }
        }
        Ok(KvStore {
            backend,
            writer: Mutex::new(None),
            records: RecordCache::new(DEFAULT_RECORDS_KEPT),
            wakeups: super::Wakeups::default(),
        })
    }

    /// Keeps up to `records` of the records written last decoded, rather
    /// than [`DEFAULT_RECORDS_KEPT`]; 0 decodes every record read.
    pub fn keeping_records(mut self, records: usize) -> Self {
        self.records = RecordCache::new(records);
        self
    }

    /// Stores bytes that do not decode as the record `key`, as a damaged
    /// disk or a bug might: for tests of what happens to its events.
    #[cfg(test)]
    pub(crate) fn spoil_record(&self, key: &RecordKey) {
        self.backend
            .apply(vec![KvWrite::Put(keys::record(key), vec![0xc1])])
            .expect("memory writes do not fail");
    }

    /// The backend, for tests that look under the tables.
    #[cfg(test)]
    pub(super) fn into_backend(self) -> B {
        self.backend
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.backend
            .get(key)?
            .map(|v| decode_value(key, &v))
            .transpose()
    }

    fn scan_values<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.backend
            .scan(prefix, after, limit)?
            .into_iter()
            .map(|(k, v)| decode_value(&k, &v).map(|t| (k, t)))
            .collect()
    }

    /// Folds visit writes into each record's stored history. Only the
    /// engine worker writes history, so reading it here is not racy.
    fn stage_history_writes(
        &self,
        visits: &[(RecordKey, u64, StageVisit)],
        writes: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        let mut histories: HashMap<&RecordKey, BTreeMap<u64, StageVisit>> = HashMap::new();
        for (record, index, visit) in visits {
            let history = match histories.entry(record) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(history::by_index(self.stage_history(record)?)),
            };
            history.insert(*index, visit.clone());
        }
        for (record, visits) in histories {
            let visits: Vec<StageVisit> = visits.into_values().collect();
            writes.push(KvWrite::Put(
                keys::stage_history(record),
                history::encode(&visits)?,
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next sequence number: cached under the writer lock, else stored.
    fn next_seq(&self, cached: Option<u64>) -> Result<u64, StoreError> {
        match cached {
            Some(next) => Ok(next),
            None => Ok(self
                .backend
                .get(keys::NEXT_SEQ)?
                .and_then(|b| keys::read_u64(&b))
                .unwrap_or(1)),
        }
    }

    /// Gives each new event a sequence number and writes them, skipping ids
    /// already in the log (or earlier in the same batch).
    fn stage_events(
        &self,
        events: Vec<NewEvent>,
        ids: Ids,
        next: &mut u64,
        writes: &mut Vec<KvWrite>,
    ) -> Result<Vec<Appended>, StoreError> {
        let mut seen_here: std::collections::HashMap<String, u64> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        let deduplicate = ids == Ids::Deduplicate;
        for e in events {
            if let Some(id) = e.id.as_ref().filter(|_| deduplicate) {
                let earlier = match seen_here.get(id) {
                    Some(seq) => Some(*seq),
                    None => self
                        .backend
                        .get(&keys::event_id(id))?
                        .and_then(|b| keys::read_u64(&b)),
                };
                if let Some(seq) = earlier {
                    out.push(Appended {
                        id: id.clone(),
                        seq,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let seq = *next;
            *next += 1;
            let id = e.id.clone().unwrap_or_else(|| format!("gen-{seq}"));
            stored.push(Event {
                seq,
                id: id.clone(),
                event_type: e.event_type,
                record: e.record,
                fields: e.fields,
                data: e.data,
                occurred_at: e.occurred_at,
                depth: e.depth,
            });
            if deduplicate && e.id.is_some() {
                writes.push(KvWrite::Put(
                    keys::event_id(&id),
                    seq.to_be_bytes().to_vec(),
                ));
                seen_here.insert(id.clone(), seq);
            }
            out.push(Appended {
                id,
                seq,
                duplicate: false,
            });
        }
        writes.extend(events::encode(&stored)?);
        writes.push(KvWrite::Put(
            keys::NEXT_SEQ.to_vec(),
            next.to_be_bytes().to_vec(),
        ));
        Ok(out)
    }

    /// Entries of a time-ordered index (8 due-time bytes after `prefix`)
    /// due at `now`, earliest first. Reads small pages and stops at the
    /// first entry not yet due, so the cost follows what is due, not what
    /// waits.
    fn scan_due(
        &self,
        prefix: &[u8],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<super::backend::Entry>, StoreError> {
        const PAGE: usize = 64;
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let due_ms = |key: &[u8]| {
            let bytes = key.strip_prefix(prefix)?.get(..8)?;
            Some(u64::from_be_bytes(bytes.try_into().ok()?))
        };
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while out.len() < limit {
            let want = PAGE.min(limit - out.len());
            let page = self.backend.scan(prefix, after.as_deref(), want)?;
            let full = page.len() == want;
            for (key, value) in page {
                if due_ms(&key).is_none_or(|due| due > now_ms) {
                    return Ok(out);
                }
                after = Some(key.clone());
                out.push((key, value));
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// Writes an outbox row and keeps its delivery indexes in step: queued
    /// by due time while waiting, listed while being handed over.
    fn stage_outbox(&self, row: &OutboxEntry, writes: &mut Vec<KvWrite>) -> Result<(), StoreError> {
        match self.get::<OutboxEntry>(&keys::outbox(&row.id))? {
            Some(old) => {
                writes.push(KvWrite::Delete(keys::outbox_due(old.due_at(), &old.id)));
                writes.push(KvWrite::Delete(keys::outbox_sending(&old.id)));
            }
            // A row's record never changes: indexed once, when it is new.
            None => writes.push(KvWrite::Put(
                keys::outbox_by_record(&row.record, &row.id),
                Vec::new(),
            )),
        }
        if row.status.is_waiting() {
            writes.push(KvWrite::Put(
                keys::outbox_due(row.due_at(), &row.id),
                Vec::new(),
            ));
        }
        if row.status == OutboxStatus::Sending {
            writes.push(KvWrite::Put(keys::outbox_sending(&row.id), Vec::new()));
        }
        writes.push(KvWrite::Put(keys::outbox(&row.id), encode_value(row)?));
        Ok(())
    }

    fn stage_task(&self, task: &Task, writes: &mut Vec<KvWrite>) -> Result<(), StoreError> {
        let owner = task.owner.as_deref().unwrap_or("");
        let old = self.get::<Task>(&keys::task(&task.id))?;
        let old_owner = old.as_ref().map(|o| o.owner.as_deref().unwrap_or(""));
        if let Some(before) = old_owner {
            writes.push(KvWrite::Delete(open_task_key(before, &task.id)));
        }
        // The owner index changes only when the owner does.
        if old_owner != Some(owner) {
            if let Some(before) = old_owner {
                writes.push(KvWrite::Delete(owner_task_key(before, &task.id)));
            }
            writes.push(KvWrite::Put(owner_task_key(owner, &task.id), Vec::new()));
        }
        if task.status == TaskStatus::Open {
            writes.push(KvWrite::Put(open_task_key(owner, &task.id), Vec::new()));
        }
        writes.push(KvWrite::Put(keys::task(&task.id), encode_value(task)?));
        Ok(())
    }
}

/// The text after `prefix` in `key`, as a paging cursor.
fn cursor_of(prefix: &[u8], key: &[u8]) -> String {
    String::from_utf8_lossy(&key[prefix.len().min(key.len())..]).into_owned()
}

/// Like [`filtered_page`], through an index: each key under `index` ends
/// with an id whose item is stored under `table` + id. Pages, cursors and
/// order (by id) are those of a scan of the table.
fn indexed_page<B: Backend, T: DeserializeOwned>(
    store: &KvStore<B>,
    index: &[u8],
    table: &[u8],
    after: Option<&str>,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T>, StoreError> {
    const CHUNK: usize = 256;
    let mut items = Vec::new();
    let mut position = after.map(|a| keys::join(&[index, a.as_bytes()]));
    loop {
        let chunk = store.backend.scan(index, position.as_deref(), CHUNK)?;
        let exhausted = chunk.len() < CHUNK;
        for (key, _) in chunk {
            let id = key[index.len()..].to_vec();
            let row_key = keys::join(&[table, &id]);
            position = Some(key);
            // Indexed items are never deleted; one missing is skipped, not fatal.
            let Some(value) = store.backend.get(&row_key)? else {
                continue;
            };
            let item: T = decode_value(&row_key, &value)?;
            if keep(&item) {
                items.push(item);
                if items.len() == limit {
                    let next = String::from_utf8_lossy(&id).into_owned();
                    return Ok(Page {
                        items,
                        next: Some(next),
                    });
                }
            }
        }
        if exhausted {
            return Ok(Page { items, next: None });
        }
    }
}

/// Scans `prefix` keeping items that pass `keep`, until `limit` are found.
fn filtered_page<B: Backend, T: DeserializeOwned>(
    store: &KvStore<B>,
    prefix: &[u8],
    after: Option<&str>,
    limit: usize,
    newest_first: bool,
    decode: fn(&[u8], &[u8]) -> Result<T, StoreError>,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T>, StoreError> {
    const CHUNK: usize = 256;
    let mut items = Vec::new();
    let mut position = after.map(|a| keys::join(&[prefix, a.as_bytes()]));
    loop {
        let chunk = if newest_first {
            store.backend.scan_rev(prefix, position.as_deref(), CHUNK)?
        } else {
            store.backend.scan(prefix, position.as_deref(), CHUNK)?
        };
        let exhausted = chunk.len() < CHUNK;
        for (key, value) in chunk {
            position = Some(key.clone());
            let item: T = decode(&key, &value)?;
            if keep(&item) {
                items.push(item);
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next: Some(cursor_of(prefix, &key)),
                    });
                }
            }
        }
        if exhausted {
            return Ok(Page { items, next: None });
        }
    }
}

impl<B: Backend> EventTable for KvStore<B> {
    fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let mut writer = self.lock();
        let mut next = self.next_seq(*writer)?;
        let mut writes = Vec::new();
        let appended = self.stage_events(events, Ids::Deduplicate, &mut next, &mut writes)?;
        self.backend.apply(writes)?;
        *writer = Some(next);
        drop(writer);
        if appended.iter().any(|a| !a.duplicate) {
            self.wakeups.events.notify_one();
        }
        Ok(appended)
    }

    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        let mut take = |key: &[u8], value: &[u8]| -> Result<bool, StoreError> {
            let row = events::decode(key, value)?;
            out.extend(
                row.into_iter()
                    .filter(|e| e.seq > seq)
                    .take(limit - out.len()),
            );
            Ok(out.len() == limit)
        };
        // The row holding `seq + 1` may start at or before `seq`. Most often
        // it ends at `seq` (the worker read it all last round), and its
        // length says so without decoding it again.
        let next = keys::event(seq.saturating_add(1));
        if let Some((key, value)) = self.backend.scan_rev(keys::EVENT, Some(&next), 1)?.first()
            && events::last_seq(key, value).is_none_or(|last| last > seq)
            && take(key, value)?
        {
            return Ok(out);
        }
        let mut after = keys::event(seq);
        loop {
            let chunk = self
                .backend
                .scan(keys::EVENT, Some(&after), ROWS_PER_READ)?;
            let exhausted = chunk.len() < ROWS_PER_READ;
            for (key, value) in chunk {
                if take(&key, &value)? {
                    return Ok(out);
                }
                after = key;
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let next = self
            .backend
            .get(keys::NEXT_SEQ)?
            .and_then(|b| keys::read_u64(&b));
        Ok(next.map_or(0, |n| n.saturating_sub(1)))
    }

    fn cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .backend
            .get(keys::CURSOR)?
            .and_then(|b| keys::read_u64(&b))
            .unwrap_or(0))
    }
}

impl<B: Backend> RecordTable for KvStore<B> {
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        match self.records.get(key) {
            Some(record) => Ok(Some(record)),
            None => self.get(&keys::record(key)),
        }
    }

    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, StoreError> {
        filtered_page(
            self,
            &keys::record_prefix(kind),
            after,
            limit,
            false,
            decode_value,
            |_: &Record| true,
        )
    }
}

impl<B: Backend> StageHistoryTable for KvStore<B> {
    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, StoreError> {
        let key = keys::stage_history(key);
        match self.backend.get(&key)? {
            Some(value) => history::decode(&key, &value),
            None => Ok(Vec::new()),
        }
    }

    fn each_stage_history(
        &self,
        visit: &mut dyn FnMut(RecordKey, Vec<StageVisit>),
    ) -> Result<(), StoreError> {
        const PAGE: usize = 1_024;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .backend
                .scan(keys::STAGE_HISTORY, after.as_deref(), PAGE)?;
            let done = page.len() < PAGE;
            for (key, value) in &page {
                let record = keys::stage_history_record(key).ok_or_else(|| StoreError::Decode {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "not a stage history key".to_owned(),
                })?;
                visit(record, history::decode(key, value)?);
            }
            if done {
                return Ok(());
            }
            after = page.into_iter().last().map(|(k, _)| k);
        }
    }
}

impl<B: Backend> TaskTable for KvStore<B> {
    fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.get(&keys::task(id))
    }

    fn tasks(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Task>, StoreError> {
        let keep = |t: &Task| {
            let owner_ok = filter
                .owner
                .as_deref()
                .is_none_or(|o| t.owner.as_deref().unwrap_or("") == o);
            let status_ok = filter.status.is_none_or(|s| t.status == s);
            let record_ok = filter.record.as_ref().is_none_or(|r| &t.record == r);
            owner_ok && status_ok && record_ok
        };
        // A person's tasks come from an owner index, not a scan of every task.
        let index = match (&filter.owner, filter.status) {
            (Some(owner), Some(TaskStatus::Open)) => Some((OPEN_TASK, owner)),
            (Some(owner), _) => Some((OWNER_TASK, owner)),
            (None, _) => None,
        };
        match index {
            Some((table, owner)) => {
                let prefix = keys::join(&[table, owner.as_bytes(), b"\0"]);
                indexed_page(self, &prefix, keys::TASK, after, limit, keep)
            }
            None => filtered_page(self, keys::TASK, after, limit, false, decode_value, keep),
        }
    }

    fn open_task_count(&self, owner: &str) -> Result<usize, StoreError> {
        let prefix = keys::join(&[OPEN_TASK, owner.as_bytes(), b"\0"]);
        Ok(self.backend.scan(&prefix, None, usize::MAX)?.len())
    }
}

impl<B: Backend> OutboxTable for KvStore<B> {
    fn outbox(&self, after: Option<&str>, limit: usize) -> Result<Page<OutboxEntry>, StoreError> {
        self.outbox_matching(&OutboxFilter::default(), after, limit)
    }

    fn outbox_matching(
        &self,
        filter: &OutboxFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<OutboxEntry>, StoreError> {
        let keep = |o: &OutboxEntry| filter.status.is_none_or(|s| o.status == s);
        match &filter.record {
            // One record's rows from its index, not a scan of every row.
            Some(record) => indexed_page(
                self,
                &keys::outbox_by_record_prefix(record),
                keys::OUTBOX,
                after,
                limit,
                keep,
            ),
            None => filtered_page(self, keys::OUTBOX, after, limit, false, decode_value, keep),
        }
    }

    fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.get(&keys::outbox(id))
    }

    fn due_outbox(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut rows = Vec::new();
        for (key, _) in self.scan_due(keys::OUTBOX_DUE, now, limit)? {
            let id = String::from_utf8_lossy(&key[keys::OUTBOX_DUE.len() + 8..]).into_owned();
            rows.extend(self.outbox_entry(&id)?);
        }
        Ok(rows)
    }

    fn next_outbox_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .backend
            .scan(keys::OUTBOX_DUE, None, 1)?
            .first()
            .and_then(|(k, _)| keys::outbox_due_ms(k))
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64)))
    }

    fn waiting_outbox(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::OUTBOX_DUE, limit)
    }

    fn sending_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut rows = Vec::new();
        for (key, _) in self.backend.scan(keys::OUTBOX_SENDING, None, limit)? {
            let id = String::from_utf8_lossy(&key[keys::OUTBOX_SENDING.len()..]).into_owned();
            rows.extend(self.outbox_entry(&id)?);
        }
        Ok(rows)
    }
}

impl<B: Backend> TimerTable for KvStore<B> {
    fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.scan_due(keys::TIMER, now, limit)?
            .into_iter()
            .map(|(key, value)| decode_value(&key, &value))
            .collect()
    }

    fn pending_timers(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::TIMER, limit)
    }

    fn next_timer(&self) -> Result<Option<Timer>, StoreError> {
        Ok(self
            .scan_values(keys::TIMER, None, 1)?
            .into_iter()
            .next()
            .map(|(_, t)| t))
    }
}

impl<B: Backend> EnrollmentTable for KvStore<B> {
    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, StoreError> {
        Ok(self
            .scan_values(&keys::enrollment_prefix(key), None, usize::MAX)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    fn all_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError> {
        filtered_page(
            self,
            keys::ENROLLMENT,
            after,
            limit,
            false,
            decode_value,
            |_: &Enrollment| true,
        )
    }

    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError> {
        filtered_page(
            self,
            keys::ENROLLMENT,
            after,
            limit,
            false,
            decode_value,
            Enrollment::is_active,
        )
    }
}

impl<B: Backend> RunTable for KvStore<B> {
    fn runs(
        &self,
        filter: &RunFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Run>, StoreError> {
        const CHUNK: usize = 64;
        let mut page = RunPage {
            filter,
            limit,
            items: Vec::new(),
        };
        // One record's rows come from its index, newest first; otherwise
        // every row is read.
        let index = filter.record.as_ref().map(keys::run_by_record_prefix);
        let scanned = index.as_deref().unwrap_or(keys::RUN);
        let mut before = None;
        if let Some(cursor) = after.map(runs::Cursor::parse) {
            // The rest of the row the last page stopped in comes first.
            let key = keys::run(&cursor.row);
            if let Some(value) = self.backend.get(&key)? {
                let mut rest = runs::decode(&key, &value)?;
                rest.truncate(cursor.index);
                if let Some(next) = page.take_row(&cursor.row, rest) {
                    return Ok(page.finish(Some(next)));
                }
            }
            before = Some(keys::join(&[scanned, cursor.row.as_bytes()]));
        }
        loop {
            let chunk = self.backend.scan_rev(scanned, before.as_deref(), CHUNK)?;
            let exhausted = chunk.len() < CHUNK;
            for (key, value) in chunk {
                let row = cursor_of(scanned, &key);
                let runs = match &index {
                    None => runs::decode(&key, &value)?,
                    Some(_) => match self.backend.get(&keys::run(&row))? {
                        Some(stored) => runs::decode(&keys::run(&row), &stored)?,
                        None => Vec::new(),
                    },
                };
                if let Some(next) = page.take_row(&row, runs) {
                    return Ok(page.finish(Some(next)));
                }
                before = Some(key);
            }
            if exhausted {
                return Ok(page.finish(None));
            }
        }
    }

    fn run_rows_in_log_order(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let after = after.map(keys::run);
        self.backend
            .scan(keys::RUN, after.as_deref(), limit)?
            .iter()
            .map(|(key, value)| runs::decode_head(key, value))
            .collect()
    }
}

/// A page of runs being gathered, newest first, a row at a time.
struct RunPage<'a> {
    filter: &'a RunFilter,
    limit: usize,
    items: Vec<Run>,
}

impl RunPage<'_> {
    /// Takes a row's runs, newest first, that pass the filter; answers the
    /// cursor to go on from once the page is full.
    fn take_row(&mut self, row: &str, runs: Vec<Run>) -> Option<runs::Cursor> {
        for (index, run) in runs.into_iter().enumerate().rev() {
            let keep = self.filter.record.as_ref().is_none_or(|k| &run.record == k)
                && self.filter.rule.as_deref().is_none_or(|n| run.rule == n);
            if keep {
                self.items.push(run);
                if self.items.len() >= self.limit {
                    return Some(runs::Cursor {
                        row: row.to_owned(),
                        index,
                    });
                }
            }
        }
        None
    }

    fn finish(self, next: Option<runs::Cursor>) -> Page<Run> {
        Page {
            items: self.items,
            next: next.map(|c| c.to_string()),
        }
    }
}

impl<B: Backend> SuppressionTable for KvStore<B> {
    fn is_suppressed(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self.suppression(email)?.is_some())
    }

    fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError> {
        let key = keys::suppressed(email);
        Ok(self
            .backend
            .get(&key)?
            .map(|value| decode_suppression(&key, &value)))
    }

    fn suppressions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError> {
        filtered_page(
            self,
            keys::SUPPRESSED,
            after,
            limit,
            false,
            |key, value| Ok(decode_suppression(key, value)),
            |_| true,
        )
    }
}

/// Why and when an address was suppressed, as stored with it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SuppressionValue {
    reason: String,
    at: Option<DateTime<Utc>>,
}

/// A stored suppression; one from before reasons were kept has an empty value.
fn decode_suppression(key: &[u8], value: &[u8]) -> Suppression {
    let address = String::from_utf8_lossy(&key[keys::SUPPRESSED.len()..]).into_owned();
    let stored: Option<SuppressionValue> = rmp_serde::from_slice(value).ok();
    let (reason, at) = stored.map_or_else(
        || ("(added before dealflow kept reasons)".to_owned(), None),
        |v| (v.reason, v.at),
    );
    Suppression {
        address,
        reason,
        at,
    }
}

impl<B: Backend> ScoreLedgerTable for KvStore<B> {
    fn score_ledger(
        &self,
        key: &RecordKey,
        model: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page<ScoreEntry>, StoreError> {
        let page = filtered_page(
            self,
            &keys::score_ledger_prefix(key, model),
            before,
            limit,
            true,
            decode_value,
            |_: &ledger::StoredEntry<String>| true,
        )?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|e| e.into_entry(key, model))
                .collect(),
            next: page.next,
        })
    }
}

impl<B: Backend> SetAsideTable for KvStore<B> {
    fn set_aside_events(&self, limit: usize) -> Result<Vec<SetAsideEvent>, StoreError> {
        self.backend
            .scan_rev(keys::SET_ASIDE, None, limit)?
            .into_iter()
            .map(|(k, v)| decode_value(&k, &v))
            .collect()
    }

    fn set_aside_count(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::SET_ASIDE, limit)
    }
}

impl<B: Backend> CounterTable for KvStore<B> {
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .backend
            .get(&keys::counter(name))?
            .and_then(|b| keys::read_u64(&b))
            .unwrap_or(0))
    }
}

impl<B: Backend> Store for KvStore<B> {
    fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        // Encode before taking the writer lock, so ingest waits only for
        // the sequence numbers and the apply. Tasks are read-modify-write,
        // but only the engine worker writes them.
        let mut w = Vec::new();
        for r in &changes.records {
            w.push(KvWrite::Put(keys::record(&r.key), encode_value(r)?));
        }
        self.stage_history_writes(&changes.stage_visits, &mut w)?;
        for t in &changes.tasks {
            self.stage_task(t, &mut w)?;
        }
        for o in &changes.outbox {
            self.stage_outbox(o, &mut w)?;
        }
        for t in &changes.timers {
            w.push(KvWrite::Put(keys::timer(t.due_at, &t.id), encode_value(t)?));
        }
        for (due, id) in &changes.timers_done {
            w.push(KvWrite::Delete(keys::timer(*due, id)));
        }
        for e in &changes.enrollments {
            w.push(KvWrite::Put(
                keys::enrollment(&e.record, &e.sequence),
                encode_value(e)?,
            ));
        }
        for row in runs::encode(&changes.runs)? {
            let id = String::from_utf8_lossy(&row.key[keys::RUN.len()..]).into_owned();
            w.push(KvWrite::Put(
                keys::run_by_record(&row.record, &id),
                Vec::new(),
            ));
            w.push(KvWrite::Put(row.key, row.value));
        }
        for id in &changes.runs_pruned {
            let key = keys::run(id);
            // Its record names its index entry; pruning is rare and batched.
            if let Some(value) = self.backend.get(&key)? {
                let row = runs::decode_head(&key, &value)?;
                w.push(KvWrite::Delete(keys::run_by_record(&row.record, id)));
            }
            w.push(KvWrite::Delete(key));
        }
        for (name, value) in &changes.counters {
            w.push(KvWrite::Put(
                keys::counter(name),
                value.to_be_bytes().to_vec(),
            ));
        }
        for notes in &changes.ledger {
            ledger::encode(notes, &mut w)?;
        }
        for s in &changes.suppress {
            let value = SuppressionValue {
                reason: s.reason.clone(),
                at: s.at,
            };
            w.push(KvWrite::Put(
                keys::suppressed(&s.address),
                encode_value(&value)?,
            ));
        }
        for event in &changes.set_aside {
            w.push(KvWrite::Put(
                keys::set_aside(event.seq),
                encode_value(event)?,
            ));
        }
        for email in &changes.unsuppress {
            w.push(KvWrite::Delete(keys::suppressed(email)));
        }
        let rings_worker = !changes.events.is_empty() || !changes.fired.is_empty();
        let rings_delivery = !changes.outbox.is_empty();
        let mut writer = self.lock();
        let mut next = self.next_seq(*writer)?;
        if !changes.events.is_empty() {
            self.stage_events(changes.events, Ids::Deduplicate, &mut next, &mut w)?;
        }
        if !changes.fired.is_empty() {
            self.stage_events(changes.fired, Ids::Unique, &mut next, &mut w)?;
        }
        if let Some(seq) = changes.handled {
            w.push(KvWrite::Put(
                keys::CURSOR.to_vec(),
                seq.to_be_bytes().to_vec(),
            ));
        }
        self.backend.apply(w)?;
        *writer = Some(next);
        drop(writer);
        self.records.written(changes.records);
        if rings_worker {
            self.wakeups.events.notify_one();
        }
        if rings_delivery {
            self.wakeups.outbox.notify_one();
        }
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.backend.flush()
    }

    fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    fn wakeups(&self) -> &super::Wakeups {
        &self.wakeups
    }
}
