//! The store over any [`Backend`]: the read helpers the tables share
//! (pages, due-time scans) and the writer lock. Each table's keys,
//! encoding, index upkeep and trait implementation live in the table's own
//! file (`events`, `records`, `history`, `tasks`, `outbox`, `timers`,
//! `enrollments`, `runs`, `suppressions`, `ledger`), above this one; the
//! one atomic commit that calls them all is `commit`, above them, and
//! opening (the format check) is `migrations`.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::record_cache::{DEFAULT_RECORDS_KEPT, RecordCache};
use super::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;

/// Event rows read at a time by `events_after`.
pub(super) const ROWS_PER_READ: usize = 32;

/// The store: tables over a backend.
pub struct KvStore<B: Backend> {
    pub(super) backend: B,
    /// Serializes writers: sequence numbers and deduplication need one
    /// writer at a time; reads never take it.
    /// Holds the next event sequence number once read, so appends do not
    /// read it from the backend every time.
    pub(super) writer: Mutex<Option<u64>>,
    /// The records written last, decoded.
    pub(super) records: RecordCache,
    /// The log's newest events, decoded (see `recent_events`).
    pub(super) recent_events: super::recent_events::RecentEvents,
    pub(super) wakeups: super::Wakeups,
    /// Where the live keys of the due-ordered indexes begin.
    pub(super) due_floors: super::due_floors::DueFloors,
    /// While a backup runs, a copy of every batch applied (see `backup`).
    /// Taken only under the writer lock, so no batch is half in it.
    tap: Mutex<Option<Vec<Vec<KvWrite>>>>,
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

impl<B: Backend> KvStore<B> {
    /// The tables over a backend whose format mark was checked (see
    /// `migrations`, which opens a store).
    pub(super) fn over(backend: B) -> Self {
        KvStore {
            backend,
            writer: Mutex::new(None),
            records: RecordCache::new(DEFAULT_RECORDS_KEPT),
            recent_events: Default::default(),
            wakeups: super::Wakeups::default(),
            due_floors: Default::default(),
            tap: Mutex::new(None),
        }
    }

    /// Keeps up to `records` of the records written last decoded, rather
    /// than [`DEFAULT_RECORDS_KEPT`]; 0 decodes every record read.
    pub fn keeping_records(mut self, records: usize) -> Self {
        self.records = RecordCache::new(records);
        self
    }

    /// Stores bytes that do not decode under `key`, as a damaged disk or a
    /// bug might: for tests of what happens to what reads it.
    #[cfg(test)]
    fn spoil(&self, key: Vec<u8>) {
        self.backend
            .apply(vec![KvWrite::Put(key, vec![0xc1])])
            .expect("memory writes do not fail");
    }

    /// Spoils the record `key` (see `spoil`).
    #[cfg(test)]
    pub(crate) fn spoil_record(&self, key: &RecordKey) {
        self.spoil(keys::record(key));
    }

    /// Spoils the timer `id` due at `due`.
    #[cfg(test)]
    pub(crate) fn spoil_timer(&self, due: DateTime<Utc>, id: &str) {
        self.spoil(keys::timer(due, id));
    }

    /// Spoils a record's enrollment in `sequence`.
    #[cfg(test)]
    pub(crate) fn spoil_enrollment(&self, key: &RecordKey, sequence: &str) {
        self.spoil(keys::enrollment(key, sequence));
    }

    /// The backend, for tests that look under the tables.
    #[cfg(test)]
    pub(super) fn into_backend(self) -> B {
        self.backend
    }

    pub(super) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.backend
            .get(key)?
            .map(|v| decode_value(key, &v))
            .transpose()
    }

    pub(super) fn scan_values<T: DeserializeOwned>(
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

    /// The last `limit` values under `prefix`, last key first.
    pub(super) fn newest_values<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.backend
            .scan_rev(prefix, None, limit)?
            .into_iter()
            .map(|(k, v)| decode_value(&k, &v))
            .collect()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every entry of the store to `each`, in key order, a chunk of
    /// keys in memory at a time (backups and checks read everything).
    pub(super) fn each_entry<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        const CHUNK: usize = 1000;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = self.backend.scan(b"", after.as_deref(), CHUNK)?;
            let done = chunk.len() < CHUNK;
            for (key, value) in chunk {
                each(&key, &value)?;
                after = Some(key);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Applies a batch; callers hold the writer lock. While a backup runs,
    /// the batch is also kept for it, once applied.
    pub(super) fn apply_batch(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut tap = self.tap.lock().unwrap_or_else(|p| p.into_inner());
        let copy = tap.is_some().then(|| writes.clone());
        let lowest = self.due_floors.lowest(&writes);
        self.backend.apply(writes)?;
        self.due_floors.lower(lowest);
        if let (Some(kept), Some(copy)) = (tap.as_mut(), copy) {
            kept.push(copy);
        }
        Ok(())
    }

    /// Applies a batch that appends `stored` (events numbered up to
    /// `next`), keeps those events decoded and lets go of the writer lock.
    /// The kept events are filled after the apply and before the lock is
    /// let go, so they never hold what the backend does not; the events no
    /// longer kept are answered, for the caller to free once it has rung
    /// the loops.
    pub(super) fn apply_appending(
        &self,
        mut writer: std::sync::MutexGuard<'_, Option<u64>>,
        writes: Vec<KvWrite>,
        stored: Vec<Event>,
        next: u64,
    ) -> Result<Vec<Event>, StoreError> {
        self.apply_batch(writes)?;
        let no_longer_kept = self.recent_events.appended(stored);
        *writer = Some(next);
        Ok(no_longer_kept)
    }

    /// Starts keeping every batch applied from now on.
    pub(super) fn open_tap(&self) {
        let _writer = self.lock();
        *self.tap.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// Whether a backup is keeping batches now (tests).
    #[cfg(test)]
    pub(super) fn tap_open(&self) -> bool {
        self.tap.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Answers the batches kept so far, in the order applied, and keeps
    /// keeping the next ones: a long backup moves them to disk as it goes
    /// instead of holding every write of its run in memory.
    pub(super) fn drain_tap(&self) -> Vec<Vec<KvWrite>> {
        self.tap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Stops keeping batches; answers those kept, in the order applied.
    pub(super) fn close_tap(&self) -> Vec<Vec<KvWrite>> {
        let _writer = self.lock();
        self.tap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// The next sequence number: cached under the writer lock, else stored.
    pub(super) fn next_seq(&self, cached: Option<u64>) -> Result<u64, StoreError> {
        match cached {
            Some(next) => Ok(next),
            None => Ok(self
                .backend
                .get(keys::NEXT_SEQ)?
                .and_then(|b| keys::read_u64(&b))
                .unwrap_or(1)),
        }
    }

    /// Entries of a time-ordered index (8 due-time bytes after `prefix`)
    /// due at `now`, earliest first. Reads small pages and stops at the
    /// first entry not yet due, so the cost follows what is due, not what
    /// waits.
    pub(super) fn scan_due(
        &self,
        prefix: &[u8],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<super::backend::Entry>, StoreError> {
        const PAGE: usize = 64;
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let floor = self.due_floors.read(prefix);
        let mut first_live: Option<u64> = None;
        let mut out = Vec::new();
        let mut after = floor.after(prefix);
        while out.len() < limit {
            let want = PAGE.min(limit - out.len());
            let page = self.backend.scan(prefix, after.as_deref(), want)?;
            let full = page.len() == want;
            for (key, value) in page {
                let due = keys::due_ms(prefix, &key);
                first_live = first_live.or(due);
                if due.is_none_or(|due| due > now_ms) {
                    self.due_floors
                        .raise(prefix, floor, first_live.unwrap_or(0));
                    return Ok(out);
                }
                after = Some(key.clone());
                out.push((key, value));
            }
            if !full {
                // The index holds nothing after what was read.
                self.due_floors
                    .raise(prefix, floor, first_live.unwrap_or(u64::MAX));
                return Ok(out);
            }
        }
        self.due_floors
            .raise(prefix, floor, first_live.unwrap_or(0));
        Ok(out)
    }

    /// The first live key of a due-ordered index, read from its floor.
    /// When the first entry of a due-ordered index is due.
    pub(super) fn next_due(&self, prefix: &[u8]) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .first_due(prefix)?
            .and_then(|(key, _)| keys::due_ms(prefix, &key))
            .and_then(|ms| DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)))
    }

    pub(super) fn first_due(
        &self,
        prefix: &[u8],
    ) -> Result<Option<super::backend::Entry>, StoreError> {
        let floor = self.due_floors.read(prefix);
        let first = self
            .backend
            .scan(prefix, floor.after(prefix).as_deref(), 1)?
            .pop();
        let ms = match &first {
            Some((key, _)) => keys::due_ms(prefix, key).unwrap_or(0),
            None => u64::MAX,
        };
        self.due_floors.raise(prefix, floor, ms);
        Ok(first)
    }
}

/// The text after `prefix` in `key`, as a paging cursor.
pub(super) fn cursor_of(prefix: &[u8], key: &[u8]) -> String {
    String::from_utf8_lossy(&key[prefix.len().min(key.len())..]).into_owned()
}

/// Like [`filtered_page`], through an index: each key under `index` ends
/// with an id whose item is stored under `table` + id. Pages, cursors and
/// order (by id) are those of a scan of the table.
pub(super) fn indexed_page<B: Backend, T: DeserializeOwned>(
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
pub(super) fn filtered_page<B: Backend, T: DeserializeOwned>(
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

impl<B: Backend> CounterTable for KvStore<B> {
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .backend
            .get(&keys::counter(name))?
            .and_then(|b| keys::read_u64(&b))
            .unwrap_or(0))
    }
}
