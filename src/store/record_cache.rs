//! Records the store wrote last, kept decoded.
//!
//! The worker reads a record back with the next event about it, and an
//! event scored in ten models raises ten `score.changed` events about the
//! same record. Decoding a scored record was over a quarter of the engine's
//! work on an event (issue 6), so the store answers a record it wrote lately
//! from here.
//!
//! Only a commit fills the cache, after its write and while it still holds
//! the writer lock, so the cache never holds what the backend does not and
//! commits update it in the order they wrote. A read that misses does not
//! fill it: a read racing a commit could otherwise put back the record as
//! it was before the commit.

use crate::state::{Record, RecordKey};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How many records a store keeps decoded unless told otherwise: a few
/// megabytes, and more than the records a busy minute touches.
pub const DEFAULT_RECORDS_KEPT: usize = 4096;

/// The most recently written records, up to a number; `None` keeps none.
pub(super) struct RecordCache(Option<Mutex<LruCache<RecordKey, Record>>>);

impl RecordCache {
    pub fn new(capacity: usize) -> Self {
        RecordCache(NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))))
    }

    /// A copy of the record, if it is kept.
    pub fn get(&self, key: &RecordKey) -> Option<Record> {
        self.lock()?.get(key).cloned()
    }

    /// Keeps records that were just written.
    pub fn written(&self, records: Vec<Record>) {
        if let Some(mut cache) = self.lock() {
            for record in records {
                cache.put(record.key.clone(), record);
            }
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, LruCache<RecordKey, Record>>> {
        // Nothing panics while holding it; a poisoned cache is still whole.
        let cache = self.0.as_ref()?;
        Some(cache.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
