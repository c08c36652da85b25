//! The on-disk backend before fjall: sled 0.34.7, kept to read stores
//! written by earlier versions and move them to fjall ([`super::sled_to_fjall`]).
//!
//! sled's flush survives a process crash but, per sled issue #1452, not
//! always a power loss of the whole machine; README says so.
//!
//! Flushing is a group commit: one synchronous `flush` at a time on a
//! blocking thread, and callers whose writes a finished flush already
//! covered return without flushing again. Concurrent `flush_async` calls
//! deadlock in sled 0.34.x (sled issue #1308), so it is not used.

use super::StoreError;
use super::backend::{Backend, Entry, KvWrite, forward_range, reverse_range, take_prefixed};
use super::disk::{GroupFlush, HeldData, lock, panic_text};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// A sled database in a folder, held by this process alone.
pub struct SledBackend {
    db: sled::Db,
    durability: Arc<GroupFlush>,
    _lock: std::fs::File,
    held_data: Arc<HeldData>,
}

/// The store error of a sled error; an I/O error is kept as the cause (a
/// full disk is recognised by its kind) and remembered as sticky.
fn failed(group: &GroupFlush, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => group.failed_io("sled", io),
        other => StoreError::backend("sled", other),
    }
}

impl SledBackend {
    /// Opens (or creates) the database in `dir` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, super::disk::DEFAULT_CACHE_MIB << 20)
    }

    /// Opens (or creates) the database in `dir`. Corruption is reported,
    /// never papered over with an empty store.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let lock = lock(dir)?;
        let held_data = Arc::new(HeldData::in_dir(dir));
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes);
        // sled asserts on some damaged files instead of answering an error:
        // that is a corrupt store too, and must say so, not abort.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("reading it failed inside sled: {}", panic_text(&panic)),
            })?;
        let db = opened.map_err(|e| match e {
            sled::Error::Corruption { .. }
            | sled::Error::Unsupported(_)
            | sled::Error::ReportableBug(_) => StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            },
            other => StoreError::backend(format!("cannot open the store at {path}"), other),
        })?;
        if held_data.was_written() && db.is_empty() {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "it held data ({} says so) but reads as empty: its database file is damaged or was replaced",
                    super::disk::HELD_DATA
                ),
            });
        }
        Ok(SledBackend {
            db,
            durability: Arc::default(),
            _lock: lock,
            held_data,
        })
    }
}

impl SledBackend {
    /// One entry of a walk, read (a read may fail).
    fn read(
        &self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Result<(sled::IVec, sled::IVec), StoreError> {
        item.map_err(|e| failed(&self.durability, e))
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(key)
            .map_err(|e| failed(&self.durability, e))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let walk = self.db.range(forward_range(prefix, after));
        take_prefixed(walk.map(|item| self.read(item)), prefix, limit)
    }

    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
        let mut n = 0;
        // sled yields keys and values together; only the count is kept.
        for item in self.db.scan_prefix(prefix).take(limit) {
            item.map_err(|e| failed(&self.durability, e))?;
            n += 1;
        }
        Ok(n)
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let walk = self.db.range(reverse_range(prefix, before)).rev();
        take_prefixed(walk.map(|item| self.read(item)), prefix, limit)
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for w in writes {
            match w {
                KvWrite::Put(k, v) => batch.insert(k, v),
                KvWrite::Delete(k) => batch.remove(k),
            }
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| failed(&self.durability, e))?;
        self.durability.applied();
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let db = self.db.clone();
        let group = self.durability.clone();
        let held_data = self.held_data.clone();
        async move {
            let sync_group = group.clone();
            group
                .flush(held_data, move || {
                    db.flush().map(drop).map_err(|e| failed(&sync_group, e))
                })
                .await
        }
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn write_failure(&self) -> Option<String> {
        self.durability.write_failure()
    }
}
