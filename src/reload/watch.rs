//! Watching the workflow folder with notify: any change anywhere in it
//! (templates too) asks for a reload, which rescans the whole folder, since
//! editors replace files on save and `git checkout` rewrites many at once.
//! The watch is set up again when the folder is replaced, renamed or was
//! briefly missing.

use super::Reloader;
use notify::RecursiveMode;
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
pub fn watch(
    dir: PathBuf,
    reloader: Reloader,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // The folder as the running set was loaded from it: any other identity
    // later (gone, renamed away, replaced) is a change to reload.
    let mut known = identity(&dir);
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
                && let Err(e) = watch_until_replaced(&dir, watched, &reloader, &cancel).await
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

/// Watches until the folder's identity is no longer `watched`.
async fn watch_until_replaced(
    dir: &Path,
    watched: (u64, u64),
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
                Some(Ok(events)) if !events.is_empty() => reloader.request(),
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
            }
        }
    };
    stop();
    outcome
}
