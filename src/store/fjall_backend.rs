//! The on-disk backend: fjall 3, a log-structured merge tree.
//!
//! Why fjall and not sled (issue 25): sled copies a whole leaf node on
//! every insert and keeps about twice its data on disk; fjall appends
//! each batch to a journal, keeps recent writes in a memtable and writes
//! compressed sorted tables in the background. Every key lives in one
//! keyspace (the tables' keys carry their own prefixes), so a batch is one
//! journal entry and atomic.
//!
//! Durability: a batch is written to the journal's buffer; [`Backend::flush`]
//! writes the buffer out and syncs the journal file (`PersistMode::SyncAll`),
//! one group at a time. After a failed write fjall refuses every later
//! one until it is opened again, as sled does; [`Backend::write_failure`]
//! says so.

use super::StoreError;
use super::backend::{Backend, Entry, KvWrite, forward_range, reverse_range, take_prefixed};
use super::disk::{FLUSH_SOON_GRACE, GroupFlush, HELD_DATA, HeldData, lock, panic_text};
use fjall::compaction::Leveled;
use fjall::config::{CompressionPolicy, PinningPolicy};
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// The one keyspace every table's keys live in.
const KEYSPACE: &str = "dealflow";

/// Memtable size: recent writes held in memory before they are written out
/// as a table. fjall's default is 64 MiB. In the ingest benchmark (2
/// cores) 16 MiB made more tables to compact: p99 at 2,000 events/s 15 ms
/// against 7 ms, batches 59,000 events/s against 87,000.
const MEMTABLE_BYTES: u64 = 32 << 20;

/// Size of the sorted tables compaction writes. fjall's default is 64 MiB,
/// and its first level holds four tables' worth (256 MiB): a store of a
/// few hundred MiB then sits in that one level, and since every new table
/// spans all the tables' key prefixes, each compaction rewrote all of it
/// (225 MiB in 2.5 s after a bulk import, while the API's syncs waited on
/// the disk: p99 at 2,000 events/s 10 to 64 ms in 7 of 16 ingest
/// benchmark runs). At 16 MiB the first level holds 64 MiB and deeper
/// levels are compacted a table at a time: p99 under 7 ms in every run,
/// batches a little faster (see issue 25's note).
const TABLE_BYTES: u64 = 16 << 20;

/// A fjall database in a folder, held by this process alone.
pub struct FjallBackend {
    db: Database,
    items: Keyspace,
    durability: Arc<GroupFlush>,
    _lock: std::fs::File,
    held_data: Arc<HeldData>,
}

/// Whether `dir` holds a fjall database (rather than nothing or sled).
pub(super) fn holds_fjall(dir: &Path) -> bool {
    dir.join("keyspaces").is_dir() || dir.join("journals").is_dir()
}

impl FjallBackend {
    /// Opens (or creates) the database in `dir` with a block cache of
    /// `cache_bytes`. Corruption is reported, never papered over.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let lock = lock(dir)?;
        let held_data = Arc::new(HeldData::in_dir(dir));
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let opened = std::panic::catch_unwind(|| {
            let db = Database::builder(dir)
                .cache_size(cache_bytes)
                // Flushes and compactions on one thread: with two, they
                // took both cores from requests (p99 at 2,000 events/s
                // 42 ms against 7 ms in the ingest benchmark).
                .worker_threads(1)
                .open()?;
            // fjall runs this only when it creates the keyspace and keeps
            // the options with it: a store keeps the options it was created
            // with (docs/operations.md, Stores created before a setting).
            let items = db.keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(MEMTABLE_BYTES)
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
                    .manual_journal_persist(true)
                    // Every event id is looked up before it is appended (a
                    // resent event is answered, not stored twice), and new ids
                    // miss: only the tables' filters are read. fjall keeps the
                    // filters of level 0 in memory and reads the others through
                    // the block cache, where data blocks pushed them out: each
                    // lookup read and checksummed a table's whole filter again.
                    // Kept in memory (about 1.25 bytes a key), batches of 100
                    // went from ~75,000 to ~87,000 events/s in the ingest
                    // benchmark.
                    .filter_block_pinning_policy(PinningPolicy::all(true))
                    .compaction_strategy(Arc::new(
                        Leveled::default().with_table_target_size(TABLE_BYTES),
                    ))
            })?;
            Ok::<_, fjall::Error>((db, items))
        })
        .map_err(|panic| {
            corrupt(format!(
                "reading it failed inside fjall: {}",
                panic_text(&panic)
            ))
        })?;
        let (db, items) = opened.map_err(|e| match e {
            fjall::Error::Io(io) => {
                StoreError::backend(format!("cannot open the store at {path}"), io)
            }
            fjall::Error::Locked => StoreError::InUse { path: path.clone() },
            other => corrupt(format!("{other:?}")),
        })?;
        if held_data.was_written() && items.is_empty().unwrap_or(false) {
            return Err(corrupt(format!(
                "it held data ({HELD_DATA} says so) but reads as empty: its files are damaged or were replaced"
            )));
        }
        Ok(FjallBackend {
            db,
            items,
            durability: Arc::default(),
            _lock: lock,
            held_data,
        })
    }

    /// What a flush needs: the group, the marker, and the sync itself.
    fn sync(
        &self,
    ) -> (
        Arc<GroupFlush>,
        Arc<HeldData>,
        impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) {
        let db = self.db.clone();
        let group = self.durability.clone();
        let sync_group = group.clone();
        let sync = move || {
            db.persist(PersistMode::SyncAll)
                .map_err(|e| failed(&sync_group, e))
        };
        (group, self.held_data.clone(), sync)
    }
}

/// The store error of a fjall error; an I/O error is kept as the cause (a
/// full disk is recognised by its kind), and a write failure is sticky.
fn failed(group: &GroupFlush, e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => {
            group.failed_io("fjall", io)
        }
        fjall::Error::Poisoned => group.refused("fjall"),
        other => StoreError::backend_said(format!("fjall: {other:?}")),
    }
}

impl FjallBackend {
    /// A walk's entries, each read (a read may fail).
    fn entries(
        &self,
        iter: impl Iterator<Item = fjall::Guard>,
    ) -> impl Iterator<Item = Result<(fjall::UserKey, fjall::UserValue), StoreError>> {
        iter.map(|guard| guard.into_inner().map_err(|e| failed(&self.durability, e)))
    }
}

impl Backend for FjallBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .items
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
        let walk = self.entries(self.items.range(forward_range(prefix, after)));
        take_prefixed(walk, prefix, limit)
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let walk = self.entries(self.items.range(reverse_range(prefix, before)).rev());
        take_prefixed(walk, prefix, limit)
    }

    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
        let mut n = 0;
        for guard in self.items.prefix(prefix).take(limit) {
            guard.key().map_err(|e| failed(&self.durability, e))?;
            n += 1;
        }
        Ok(n)
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for w in writes {
            match w {
                KvWrite::Put(k, v) => batch.insert(&self.items, k, v),
                KvWrite::Delete(k) => batch.remove(&self.items, k),
            }
        }
        batch.commit().map_err(|e| failed(&self.durability, e))?;
        self.durability.applied();
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (group, held_data, sync) = self.sync();
        async move { group.flush(held_data, sync).await }
    }

    fn flush_soon(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (group, held_data, sync) = self.sync();
        async move { group.flush_soon(held_data, sync, FLUSH_SOON_GRACE).await }
    }

    fn size_on_disk(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn write_failure(&self) -> Option<String> {
        self.durability.write_failure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that do not compress: `len` bytes of xorshift noise.
    fn noise(state: &mut u64, len: usize) -> Vec<u8> {
        let words = (0..len / 8).map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        });
        words.flat_map(u64::to_le_bytes).collect()
    }

    #[test]
    fn compaction_writes_tables_of_table_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FjallBackend::open(dir.path(), 1 << 20).unwrap();
        // Five tables of 8 MiB whose keys interleave, so compaction merges
        // them (disjoint ones it would only move) into tables of
        // TABLE_BYTES: three; fjall's default size would make one.
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for table in 0..5u32 {
            let writes = (0..2048u32)
                .map(|i| {
                    KvWrite::Put(
                        (i * 5 + table).to_be_bytes().to_vec(),
                        noise(&mut state, 4096),
                    )
                })
                .collect();
            backend.apply(writes).unwrap();
            backend.items.rotate_memtable_and_wait().unwrap();
        }
        for _ in 0..600 {
            if backend.items.l0_table_count() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(backend.items.l0_table_count(), 0, "compaction never ran");
        assert_eq!(backend.items.table_count(), 3);
    }
}
