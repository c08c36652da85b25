//! The on-disk backend: sled 0.34.7.
//!
//! sled's flush survives a process crash but, per sled issue #1452, not
//! always a power loss of the whole machine; README says so.
//!
//! Flushing is a group commit: one synchronous `flush` at a time on a
//! blocking thread, and callers whose writes a finished flush already
//! covered return without flushing again. Concurrent `flush_async` calls
//! deadlock in sled 0.34.x (sled issue #1308), so it is not used.

use super::StoreError;
use super::backend::{Backend, Entry, KvWrite};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default page cache in MiB (sled's own default is 1 GiB). sled's
/// accounting undercounts: a 64 MiB cache took about 110 MiB in the
/// ingest benchmark. 16 MiB cost no measured speed in the ingest, report
/// or timer benchmarks and saved 84 MiB of RSS at 200,000 records.
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// A sled database in a folder, held by this process alone.
pub struct SledBackend {
    db: sled::Db,
    durability: Arc<GroupFlush>,
    /// Our own lock on the folder, held while the backend lives: sled locks
    /// too, but says so only in an error's text.
    _lock: std::fs::File,
    /// Written beside sled's files once data was flushed (see [`HELD_DATA`]).
    held_data: Arc<HeldData>,
}

/// A file beside sled's own, written after the first flush. sled opens a
/// destroyed database file as an empty tree; with this file there, an
/// empty tree means lost data, and the daemon must not start empty over it.
const HELD_DATA: &str = "dealflow.held-data";

/// Whether [`HELD_DATA`] is written, and where.
struct HeldData {
    path: std::path::PathBuf,
    written: std::sync::atomic::AtomicBool,
}

/// The lock file in the store folder.
const LOCK_FILE: &str = "dealflow.lock";

/// Locks `dir` for this process, or says that another one holds it.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::backend(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::backend(
            format!("cannot lock {}", path.display()),
            e,
        )),
    }
}

/// Counts applied batches and the ones known durable.
#[derive(Default)]
struct GroupFlush {
    /// Batches applied so far.
    applied: AtomicU64,
    /// Batches covered by a finished flush.
    flushed: AtomicU64,
    /// Held by the one flush in progress.
    running: tokio::sync::Mutex<()>,
    /// The first write error: sled answers every later call with an error
    /// once one write failed (a full disk, say), until it is opened again.
    write_failure: std::sync::OnceLock<String>,
}

impl GroupFlush {
    /// The store error of a sled error; an I/O error is kept as the cause
    /// (a full disk is recognised by its kind) and remembered as sticky.
    fn failed(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) => {
                let _ = self.write_failure.set(io.to_string());
                StoreError::backend("sled", io)
            }
            other => StoreError::backend("sled", other),
        }
    }
}

impl SledBackend {
    /// Opens (or creates) the database in `dir` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_MIB << 20)
    }

    /// Opens (or creates) the database in `dir`. Corruption is reported,
    /// never papered over with an empty store.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let lock = lock(dir)?;
        let held_data = Arc::new(HeldData {
            path: dir.join(HELD_DATA),
            written: std::sync::atomic::AtomicBool::new(dir.join(HELD_DATA).exists()),
        });
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
        if held_data.written.load(Ordering::SeqCst) && db.is_empty() {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "it held data ({HELD_DATA} says so) but reads as empty: its database file is damaged or was replaced"
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

impl HeldData {
    /// Writes the file once, after data is durable. A failure is logged, not
    /// fatal: the file only guards against a damaged store.
    fn mark(&self) {
        if self.written.load(Ordering::SeqCst) {
            return;
        }
        match std::fs::write(&self.path, b"dealflow wrote data to this store\n") {
            Ok(()) => self.written.store(true, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "Could not write the held-data marker.")
            }
        }
    }
}

/// The message of a caught panic.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(key)
            .map_err(|e| self.durability.failed(e))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let start = super::backend::forward_start(prefix, after);
        let mut out = Vec::new();
        for item in self.db.range((start, std::ops::Bound::Unbounded)) {
            let (k, v) = item.map_err(|e| self.durability.failed(e))?;
            if !k.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
        let mut n = 0;
        // sled yields keys and values together; only the count is kept.
        for item in self.db.scan_prefix(prefix).take(limit) {
            item.map_err(|e| self.durability.failed(e))?;
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
        let upper = super::backend::reverse_upper(prefix, before);
        let mut out = Vec::new();
        for item in self
            .db
            .range((std::ops::Bound::Included(prefix.to_vec()), upper))
            .rev()
        {
            let (k, v) = item.map_err(|e| self.durability.failed(e))?;
            if out.len() == limit {
                break;
            }
            if k.starts_with(prefix) {
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
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
            .map_err(|e| self.durability.failed(e))?;
        self.durability.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let db = self.db.clone();
        let group = self.durability.clone();
        let held_data = self.held_data.clone();
        async move {
            let mine = group.applied.load(Ordering::SeqCst);
            let _running = group.running.lock().await;
            if group.flushed.load(Ordering::SeqCst) >= mine {
                return Ok(());
            }
            let covered = group.applied.load(Ordering::SeqCst);
            tokio::task::spawn_blocking(move || {
                db.flush()?;
                held_data.mark();
                Ok::<_, sled::Error>(())
            })
            .await
            .map_err(|e| StoreError::backend("the flush thread failed", e))?
            .map_err(|e| group.failed(e))?;
            group.flushed.fetch_max(covered, Ordering::SeqCst);
            Ok(())
        }
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn write_failure(&self) -> Option<String> {
        self.durability.write_failure.get().cloned()
    }
}
