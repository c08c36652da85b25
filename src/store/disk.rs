//! What the on-disk backends share: our own lock on the folder, the
//! held-data marker, and the group flush.
//!
//! Flushing is a group commit: one flush at a time on a blocking thread,
//! and callers whose writes a finished flush already covered return
//! without flushing again. While one flush runs, the next group gathers.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The default block cache in MiB. (With sled, 16 MiB cost no measured
/// speed in the ingest, report or timer benchmarks and saved 84 MiB of RSS
/// at 200,000 records against 64 MiB.)
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// How long [`GroupFlush::flush_soon`] waits for another writer's flush
/// before it syncs: about one sync on this kind of disk (0.2–0.5 ms)
/// and a few rounds of requests.
pub(super) const FLUSH_SOON_GRACE: std::time::Duration = std::time::Duration::from_millis(2);

/// The lock file in the store folder.
const LOCK_FILE: &str = "dealflow.lock";

/// Locks `dir` for this process, or says that another one holds it. The
/// engines lock too, but say so only in an error's text.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::backend(format!("cannot create {}", dir.display()), e))?;
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

/// A file beside the engine's own, written after the first flush. An
/// engine may open a destroyed database as an empty one; with this file
/// there, an empty store means lost data, and the daemon must not start
/// empty over it.
pub(super) const HELD_DATA: &str = "dealflow.held-data";

/// Whether [`HELD_DATA`] is written, and where.
pub(super) struct HeldData {
    path: PathBuf,
    written: AtomicBool,
}

impl HeldData {
    pub(super) fn in_dir(dir: &Path) -> Self {
        let path = dir.join(HELD_DATA);
        HeldData {
            written: AtomicBool::new(path.exists()),
            path,
        }
    }

    /// Whether the store held data once.
    pub(super) fn was_written(&self) -> bool {
        self.written.load(Ordering::SeqCst)
    }

    /// Writes the file once, after data is durable. A failure is logged, not
    /// fatal: the file only guards against a damaged store.
    pub(super) fn mark(&self) {
        if self.was_written() {
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

/// Counts applied batches and the ones known durable.
#[derive(Default)]
pub(super) struct GroupFlush {
    /// Batches applied so far.
    applied: AtomicU64,
    /// Batches covered by a finished flush.
    flushed: AtomicU64,
    /// Held by the one flush in progress.
    running: tokio::sync::Mutex<()>,
    /// Rung after each flush that finished.
    finished: tokio::sync::Notify,
    /// The first write error: the engines refuse every later write once one
    /// failed (a full disk, say), until the store is opened again.
    write_failure: std::sync::OnceLock<(String, std::io::ErrorKind)>,
}

impl GroupFlush {
    /// Counts one applied batch.
    pub(super) fn applied(&self) {
        self.applied.fetch_add(1, Ordering::SeqCst);
    }

    /// Remembers the first write failure; answers the store error.
    pub(super) fn failed_io(&self, what: &str, io: std::io::Error) -> StoreError {
        let _ = self.write_failure.set((io.to_string(), io.kind()));
        StoreError::backend(what.to_owned(), io)
    }

    /// The error of a write refused because an earlier one failed: caused
    /// by that failure, so a full disk still reads as one.
    pub(super) fn refused(&self, engine: &str) -> StoreError {
        let (text, kind) = self
            .write_failure
            .get_or_init(|| ("a write failed".to_owned(), std::io::ErrorKind::Other))
            .clone();
        StoreError::backend(
            format!(
                "{engine} refuses writes after an earlier one failed, until the store is opened again"
            ),
            std::io::Error::new(kind, text),
        )
    }

    pub(super) fn write_failure(&self) -> Option<String> {
        self.write_failure.get().map(|(text, _)| text.clone())
    }

    /// Makes every batch applied so far durable with `sync` (run on the
    /// blocking pool), unless a flush that finished already covered them.
    pub(super) async fn flush(
        &self,
        held_data: std::sync::Arc<HeldData>,
        sync: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let mine = self.applied.load(Ordering::SeqCst);
        let _running = self.running.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let covered = self.applied.load(Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            sync()?;
            held_data.mark();
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| StoreError::backend("the flush thread failed", e))??;
        self.flushed.fetch_max(covered, Ordering::SeqCst);
        self.finished.notify_waiters();
        Ok(())
    }

    /// The same, for a caller that can wait a little: a flush that another
    /// caller starts within `grace` covers these batches too, and only if
    /// none does is a sync started for them. Under load the API's appender
    /// flushes all the time, and the engine worker's and delivery's batches
    /// ride on its syncs instead of queueing syncs of their own ahead of it
    /// (a request waits for the sync in progress, then for its own).
    pub(super) async fn flush_soon(
        &self,
        held_data: std::sync::Arc<HeldData>,
        sync: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
        grace: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mine = self.applied.load(Ordering::SeqCst);
        let grace = tokio::time::sleep(grace);
        tokio::pin!(grace);
        loop {
            // Registered before the check, so a flush finishing in
            // between still wakes it.
            let finished = self.finished.notified();
            if self.flushed.load(Ordering::SeqCst) >= mine {
                return Ok(());
            }
            tokio::select! {
                () = finished => {}
                () = &mut grace => break,
            }
        }
        self.flush(held_data, sync).await
    }
}

/// The message of a caught panic.
pub(super) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A group and a sync that counts its calls.
    fn counted() -> (
        Arc<GroupFlush>,
        Arc<HeldData>,
        Arc<AtomicUsize>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(HeldData::in_dir(dir.path()));
        (Arc::default(), held, Arc::new(AtomicUsize::new(0)), dir)
    }

    fn sync(syncs: &Arc<AtomicUsize>) -> impl FnOnce() -> Result<(), StoreError> + Send + 'static {
        let syncs = syncs.clone();
        move || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_flush_soon_alone_syncs_after_its_grace() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        group
            .flush_soon(held.clone(), sync(&syncs), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        assert!(held.was_written(), "the marker follows the first sync");
        // Covered already: no second sync, whatever the grace.
        group
            .flush_soon(held, sync(&syncs), Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_flush_soon_rides_on_another_writers_flush() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        // A grace no test waits out: only another flush can end it.
        let waiting = tokio::spawn({
            let (group, held, syncs) = (group.clone(), held.clone(), syncs.clone());
            async move {
                group
                    .flush_soon(held, sync(&syncs), Duration::from_secs(3600))
                    .await
            }
        });
        tokio::task::yield_now().await;
        group.applied();
        group.flush(held, sync(&syncs)).await.unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "one sync covered both");
    }

    #[tokio::test]
    async fn a_flush_soon_is_not_covered_by_a_flush_that_started_before_its_batch() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        group.flush(held.clone(), sync(&syncs)).await.unwrap();
        group.applied();
        group
            .flush_soon(held, sync(&syncs), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }
}
