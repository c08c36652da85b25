//! Watching the workflow folder with notify: any change anywhere in it
//! (templates too) asks for a reload, which rescans the whole folder, since
//! editors replace files on save and `git checkout` rewrites many at once.
//! The watch is set up again when the folder is replaced, renamed or was
//! briefly missing.

use super::Reloader;
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events closer together than this are one change.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the folder's identity is checked (replaced or gone).
const CHECK: Duration = Duration::from_millis(500);

/// Watches `dir` until `cancel`, asking `reloader` for a reload on changes.
/// `loaded` is [`files_fingerprint`] taken before the running set was
/// loaded, so a save made before the watch starts is reloaded too.
pub fn watch(
    dir: PathBuf,
    loaded: u64,
    reloader: Reloader,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // The folder as the running set was loaded from it: any other identity
    // later (gone, renamed away, replaced) is a change to reload.
    let mut known = identity(&dir);
    let mut files = FilesSeen::from(loaded);
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            let current = identity(&dir);
            if current != known {
                // Reload what is there now; a missing folder fails and keeps
                // the running set.
                reloader.request();
                known = current;
            }
            if let Some(watched) = current
                && let Err(e) =
                    watch_until_replaced(&dir, watched, &mut files, &reloader, &cancel).await
            {
                tracing::warn!(error = %e, folder = %dir.display(), "Cannot watch the workflow folder; trying again.");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(CHECK) => {}
            }
        }
    })
}

/// A folder's identity: a rename or a replacement gives another one.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        meta.modified().ok().map(|_| (0, 0))
    }
}

/// The folder's files as `stat` sees them (names, sizes, modification
/// times), checked with the folder's identity. inotify does not report
/// every change everywhere (some bind mounts and network filesystems), nor
/// a save made between loading the folder and starting the watch: such a
/// save is reloaded within two checks all the same. Reading metadata reads
/// no file, so an idle daemon still reads nothing.
struct FilesSeen {
    /// The fingerprint the running rules were (or are being) loaded from.
    last: u64,
    /// An event asked for a reload since the last check, which covers
    /// whatever changed meanwhile.
    notified: bool,
    /// A changed fingerprint seen at the last check: reloaded if no event
    /// comes for it by the next one (the debounced event is usually only
    /// late, and one save must be one reload).
    suspect: Option<u64>,
}

impl From<u64> for FilesSeen {
    /// The folder as it was when the running set was loaded.
    fn from(loaded: u64) -> Self {
        FilesSeen {
            last: loaded,
            notified: false,
            suspect: None,
        }
    }
}

impl FilesSeen {
    /// An event asked for a reload.
    fn notified(&mut self) {
        self.notified = true;
    }

    /// Whether the files changed, and stayed so for a whole check
    /// interval, without an event asking for a reload.
    fn changed_unnoticed(&mut self, dir: &Path) -> bool {
        let now = files_fingerprint(dir);
        if std::mem::take(&mut self.notified) || now == self.last {
            self.last = now;
            self.suspect = None;
            return false;
        }
        if self.suspect == Some(now) {
            self.last = now;
            self.suspect = None;
            return true;
        }
        self.suspect = Some(now);
        false
    }
}

/// A hash of every file's path, size and modification time below `dir`
/// (hidden folders skipped, as the loader does).
pub fn files_fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok);
    for entry in walker {
        entry.path().hash(&mut hasher);
        if let Ok(meta) = entry.metadata() {
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Whether an event can change what a reload reads. Opening and reading a
/// file are events too (inotify reports them): counting them made every
/// reload's own reads ask for the next reload, forever.
fn changes_files(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Watches until the folder's identity is no longer `watched`.
async fn watch_until_replaced(
    dir: &Path,
    watched: (u64, u64),
    files: &mut FilesSeen,
    reloader: &Reloader,
    cancel: &CancellationToken,
) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let _ = tx.send(result);
    })?;
    let watching = debouncer.watch(dir, RecursiveMode::Recursive);
    // Stopping the watcher joins its threads: never on a runtime thread.
    let stop = move || {
        tokio::task::spawn_blocking(move || drop(debouncer));
    };
    if let Err(e) = watching {
        stop();
        return Err(e);
    }
    // One clock for the identity check: a fresh sleep per loop turn would
    // never finish while events keep coming.
    let mut check = tokio::time::interval(CHECK);
    let outcome = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            event = rx.recv() => match event {
                Some(Ok(events)) if events.iter().any(|e| changes_files(&e.kind)) => {
                    files.notified();
                    reloader.request();
                }
                Some(Ok(_)) => {}
                Some(Err(errors)) => {
                    for e in errors {
                        tracing::warn!(error = %e, "Watching the workflow folder reported an error.");
                    }
                }
                None => break Ok(()),
            },
            _ = check.tick() => {
                if identity(dir) != Some(watched) {
                    tracing::debug!("The workflow folder was replaced or is gone.");
                    break Ok(());
                }
                if files.changed_unnoticed(dir) {
                    tracing::debug!("A change the watcher did not report; reloading.");
                    reloader.request();
                }
            }
        }
    };
    stop();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RemoveKind};

    #[test]
    fn a_change_no_event_reported_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "rules: []\n").unwrap();
        let mut seen = FilesSeen::from(files_fingerprint(dir.path()));
        assert!(!seen.changed_unnoticed(dir.path()));
        std::fs::write(dir.path().join("b.yaml"), "rules: []\n").unwrap();
        // Seen at one check, reloaded at the next if no event came.
        assert!(!seen.changed_unnoticed(dir.path()));
        assert!(seen.changed_unnoticed(dir.path()));
        assert!(!seen.changed_unnoticed(dir.path()));
        // A change an event reported is not reloaded a second time.
        std::fs::write(dir.path().join("c.yaml"), "rules: []\n").unwrap();
        assert!(!seen.changed_unnoticed(dir.path()));
        seen.notified();
        assert!(!seen.changed_unnoticed(dir.path()));
        assert!(!seen.changed_unnoticed(dir.path()));
    }

    #[test]
    fn reads_do_not_ask_for_a_reload_and_writes_do() {
        let reads = [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ];
        let writes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::File),
        ];
        assert!(reads.iter().all(|k| !changes_files(k)));
        assert!(writes.iter().all(changes_files));
    }
}
