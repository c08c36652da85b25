//! What the on-disk backends share: our own lock on the folder, the
//! held-data marker, and the group flush.
//!
//! Flushing is a group commit: one flush at a time on a blocking thread,
//! and callers whose writes a finished flush already covered return
//! without flushing again. While one flush runs, the next group gathers.
//! Writers no request waits on (the engine worker, delivery) call
//! `flush_soon` instead: while the API's appender is busy they let its
//! next flush cover them rather than queue one of their own ahead of it.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
    /// Callers inside [`GroupFlush::flush`] now: a writer someone waits on
    /// is about to sync.
    urgent: AtomicUsize,
    /// Whether the last sync was such a writer's: it is busy, and will
    /// sync again soon.
    last_sync_urgent: AtomicBool,
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
        let _urgent = Counted::enter(&self.urgent);
        self.sync_unless_covered(held_data, sync, true).await
    }

    async fn sync_unless_covered(
        &self,
        held_data: std::sync::Arc<HeldData>,
        sync: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
        urgent: bool,
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
        self.last_sync_urgent.store(urgent, Ordering::SeqCst);
        self.finished.notify_waiters();
        Ok(())
    }

    /// The same, for a caller that can wait a little: when a writer
    /// someone waits on (the API's appender) is busy — flushing now, or
    /// the last to sync — a sync it starts within `grace` covers these
    /// batches too, and only if none does is a sync started for them.
    /// Under load the appender flushes all the time, and the engine
    /// worker's and delivery's batches ride on its syncs instead of
    /// queueing syncs of their own ahead of its next one (a request waited
    /// for the sync in progress, then for its own). Otherwise (delivery
    /// working off a backlog alone) it syncs at once, as
    /// [`GroupFlush::flush`] does.
    pub(super) async fn flush_soon(
        &self,
        held_data: std::sync::Arc<HeldData>,
        sync: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
        grace: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mine = self.applied.load(Ordering::SeqCst);
        let busy =
            self.urgent.load(Ordering::SeqCst) > 0 || self.last_sync_urgent.load(Ordering::SeqCst);
        if !busy {
            return self.sync_unless_covered(held_data, sync, false).await;
        }
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
        self.sync_unless_covered(held_data, sync, false).await
    }
}

/// One caller counted in while it is inside, also when its future is
/// dropped half-way.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

    /// A grace no test waits out: only another flush can end it.
    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_flush_soon_syncs_at_once_when_no_other_writer_is_flushing() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        let alone = group.flush_soon(held.clone(), sync(&syncs), NEVER);
        tokio::time::timeout(Duration::from_secs(60), alone)
            .await
            .expect("it did not wait for the grace")
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        assert!(held.was_written(), "the marker follows the first sync");
        // Covered already: no second sync.
        group.flush_soon(held, sync(&syncs), NEVER).await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_flush_soon_rides_on_the_next_sync_of_a_writer_flushing_now() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        // The appender's flush, held inside its sync until released.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let held_sync = {
            let syncs = syncs.clone();
            move || {
                let _ = released.recv();
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let first = tokio::spawn({
            let (group, held) = (group.clone(), held.clone());
            async move { group.flush(held, held_sync).await }
        });
        while group.urgent.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The worker's batch, applied while that sync runs: not covered by it.
        group.applied();
        let worker = tokio::spawn({
            let (group, held, syncs) = (group.clone(), held.clone(), syncs.clone());
            async move { group.flush_soon(held, sync(&syncs), NEVER).await }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert!(
            !worker.is_finished(),
            "the first sync did not cover the worker's batch"
        );
        // The appender's next flush covers it.
        group.flush(held, sync(&syncs)).await.unwrap();
        worker.await.unwrap().unwrap();
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            2,
            "the worker started no sync"
        );
    }

    #[tokio::test]
    async fn after_the_appenders_last_sync_a_flush_soon_waits_its_grace_then_syncs() {
        let (group, held, syncs, _dir) = counted();
        group.applied();
        group.flush(held.clone(), sync(&syncs)).await.unwrap();
        // Not covered by that sync, and no other comes: its own, once.
        group.applied();
        let soon = Duration::from_millis(1);
        group
            .flush_soon(held.clone(), sync(&syncs), soon)
            .await
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
        // That sync was its own, so the next one does not wait.
        group.applied();
        let next = group.flush_soon(held, sync(&syncs), NEVER);
        tokio::time::timeout(Duration::from_secs(60), next)
            .await
            .expect("it did not wait for the grace")
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 3);
    }
}
