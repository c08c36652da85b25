//! Opening the store on disk, moving a sled store to fjall first.
//!
//! Stores written before fjall (issue 25) are sled databases in the same
//! folder. On first open the folder's entries are copied, in key order,
//! into a fjall database beside it; once that copy is durable and holds
//! as many entries, the sled folder is renamed `store.sled-old` and the new
//! one takes its name. Until the first rename the sled store is untouched,
//! and a copy interrupted there is started over; a stop between the two
//! renames is finished on the next open.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::fjall_backend::{FjallBackend, holds_fjall};
use super::sled_backend::SledBackend;
use std::path::{Path, PathBuf};

/// Entries copied per batch.
const CHUNK: usize = 1_000;

/// Whether `dir` holds a sled database.
fn holds_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// `store` → `store.SUFFIX`, beside it.
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// Opens the store in `dir` on fjall, moving a sled store there to fjall
/// first.
pub fn open_disk(dir: &Path, cache_bytes: u64) -> Result<FjallBackend, StoreError> {
    let moved = beside(dir, "fjall-new");
    let old = beside(dir, "sled-old");
    if !dir.exists() && moved.exists() && old.exists() {
        // Stopped between the renames: the copy was complete.
        rename(&moved, dir)?;
    }
    if holds_sled(dir) && !holds_fjall(dir) {
        move_to_fjall(dir, &moved, &old)?;
    }
    FjallBackend::open(dir, cache_bytes)
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|e| {
        StoreError::backend(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn move_to_fjall(dir: &Path, moved: &Path, old: &Path) -> Result<(), StoreError> {
    // Opened first: a daemon still running on the folder refuses the move.
    let sled = SledBackend::open(dir)?;
    tracing::warn!(store = %dir.display(), "Moving the store from sled to fjall (once; the sled copy is kept beside it).");
    if moved.exists() {
        // An earlier copy that did not finish.
        std::fs::remove_dir_all(moved)
            .map_err(|e| StoreError::backend(format!("cannot remove {}", moved.display()), e))?;
    }
    let fjall = FjallBackend::open(moved, super::disk::DEFAULT_CACHE_MIB << 20)?;
    let (mut copied, mut after) = (0usize, None::<Vec<u8>>);
    loop {
        let chunk = sled.scan(b"", after.as_deref(), CHUNK)?;
        let done = chunk.len() < CHUNK;
        after = chunk.last().map(|(k, _)| k.clone()).or(after);
        copied += chunk.len();
        fjall.apply(chunk.into_iter().map(|(k, v)| KvWrite::Put(k, v)).collect())?;
        if done {
            break;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::backend("cannot start the copy's flush", e))?;
    runtime.block_on(fjall.flush())?;
    let landed = fjall.count(b"", usize::MAX)?;
    if landed != copied {
        return Err(StoreError::backend_said(format!(
            "moving the store to fjall copied {copied} entries but reads {landed}; the sled store is unchanged"
        )));
    }
    drop((sled, fjall));
    rename(dir, old)?;
    rename(moved, dir)?;
    tracing::warn!(entries = copied, old = %old.display(), "The store now runs on fjall; delete the sled copy once satisfied.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewEvent;
    use crate::store::{EventTable, KvStore, Store};

    fn event(id: &str) -> NewEvent {
        NewEvent::form(id, "L1")
    }

    /// A sled store holding `n` events, written by the engine before fjall.
    fn sled_store(dir: &Path, n: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = KvStore::open(SledBackend::open(dir).unwrap(), "t").unwrap();
        store
            .append_events((0..n).map(|i| event(&format!("e{i}"))).collect())
            .unwrap();
        runtime.block_on(store.flush()).unwrap();
    }

    fn events_in(dir: &Path) -> usize {
        let store = KvStore::open(open_when_free(dir), "t").unwrap();
        store.events_after(0, usize::MAX).unwrap().len()
    }

    /// sled's background threads let go of the folder's lock shortly after
    /// its last handle is dropped; a move in the same process waits for it.
    fn open_when_free(dir: &Path) -> FjallBackend {
        for _ in 0..100 {
            match open_disk(dir, 1 << 20) {
                Err(e) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                opened => return opened.unwrap(),
            }
        }
        panic!("the sled store stayed locked");
    }

    #[test]
    fn a_sled_store_moves_to_fjall_once_and_the_sled_copy_is_kept_beside_it() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("store");
        // More than one copy batch.
        sled_store(&dir, 2_500);
        assert_eq!(events_in(&dir), 2_500);
        assert!(holds_fjall(&dir) && !holds_sled(&dir));
        assert!(holds_sled(&parent.path().join("store.sled-old")));
        // Opened again, it is fjall's and nothing moves twice.
        assert_eq!(events_in(&dir), 2_500);
        let store = KvStore::open(open_disk(&dir, 1 << 20).unwrap(), "t").unwrap();
        assert!(store.append_events(vec![event("e7")]).unwrap()[0].duplicate);
    }

    #[test]
    fn a_move_stopped_between_its_renames_is_finished_and_one_stopped_in_the_copy_starts_over() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("store");
        sled_store(&dir, 10);
        assert_eq!(events_in(&dir), 10);
        // As if stopped after the first rename.
        rename(&dir, &parent.path().join("store.fjall-new")).unwrap();
        assert_eq!(events_in(&dir), 10);

        // A half copy left beside a sled store is thrown away and redone.
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("store");
        sled_store(&dir, 10);
        let half = FjallBackend::open(&parent.path().join("store.fjall-new"), 1 << 20).unwrap();
        half.apply(vec![KvWrite::Put(b"stray".to_vec(), b"x".to_vec())])
            .unwrap();
        drop(half);
        assert_eq!(events_in(&dir), 10);
        let backend = open_disk(&dir, 1 << 20).unwrap();
        assert_eq!(backend.get(b"stray").unwrap(), None);
    }
}
