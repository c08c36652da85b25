//! Opening a store: its format mark checked, and upgrades of the format,
//! one registered step at a time. A store opened with an older mark goes
//! through each step from its mark to [`keys::FORMAT_VERSION`]; each step
//! writes the next mark only after its own writes, so a crash part way runs the step again (every step must be
//! safe to run twice). A mark with no step from it is refused: formats
//! before `dealflow-6` were never released, and their readers are gone.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value};
use super::runs;
use super::tasks::owner_task_key;
use crate::state::{OutboxEntry, Task};

impl<B: Backend> KvStore<B> {
    /// Opens the tables on a backend, checking the store's format mark so a
    /// store of another program or version is refused rather than misread,
    /// and bringing an older format up to date.
    pub fn open(backend: B, path: &str) -> Result<Self, StoreError> {
        match backend.get(keys::FORMAT)? {
            Some(mark) => upgrade(&backend, mark, path)?,
            None => {
                if !backend.scan(b"", None, 1)?.is_empty() {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        reason: "it holds data but no dealflow format mark".to_owned(),
                    });
                }
                backend.apply(vec![KvWrite::Put(
                    keys::FORMAT.to_vec(),
                    keys::FORMAT_VERSION.to_vec(),
                )])?;
            }
        }
        Ok(KvStore::over(backend))
    }
}

/// One step from a format to the next.
struct Migration<B> {
    from: &'static [u8],
    to: &'static [u8],
    /// What it does, for the log.
    what: &'static str,
    run: fn(&B) -> Result<(), StoreError>,
}

fn registry<B: Backend>() -> [Migration<B>; 2] {
    [
        Migration {
            from: b"dealflow-6",
            to: b"dealflow-7",
            what: "outbox rows and runs indexed by record, tasks by owner",
            run: index_by_record_and_owner,
        },
        // Rows stored before read as they were (see `JsonText`); the mark
        // keeps an older dealflow from reading rows it cannot.
        Migration {
            from: b"dealflow-7",
            to: b"dealflow-8",
            what: "webhook bodies kept as the JSON text they are sent as",
            run: |_| Ok(()),
        },
    ]
}

/// Whether a store marked `mark` opens here: the current format, or one
/// it moves over.
pub(super) fn opens(mark: &[u8]) -> bool {
    // The steps' marks do not depend on the backend they run on.
    mark == keys::FORMAT_VERSION
        || registry::<super::MemoryBackend>()
            .iter()
            .any(|step| step.from == mark)
}

/// Brings a store marked `mark` to the current format, or refuses it.
fn upgrade<B: Backend>(backend: &B, mut mark: Vec<u8>, path: &str) -> Result<(), StoreError> {
    let steps = registry::<B>();
    while mark != keys::FORMAT_VERSION {
        let Some(step) = steps.iter().find(|m| m.from == mark) else {
            return Err(StoreError::Format {
                path: path.to_owned(),
                found: String::from_utf8_lossy(&mark).into_owned(),
                expected: String::from_utf8_lossy(keys::FORMAT_VERSION).into_owned(),
            });
        };
        (step.run)(backend)?;
        backend.apply(vec![KvWrite::Put(keys::FORMAT.to_vec(), step.to.to_vec())])?;
        tracing::info!(
            path,
            from = %String::from_utf8_lossy(step.from),
            to = %String::from_utf8_lossy(step.to),
            "Moved the store to a new format: {}.",
            step.what
        );
        mark = step.to.to_vec();
    }
    Ok(())
}

/// `dealflow-6` → `dealflow-7`: the indexes that format added.
fn index_by_record_and_owner<B: Backend>(backend: &B) -> Result<(), StoreError> {
    build_index(backend, keys::OUTBOX, |key, value| {
        let row: OutboxEntry = decode_value(key, value)?;
        Ok(keys::outbox_by_record(&row.record, &row.id))
    })?;
    build_index(backend, keys::RUN, |key, value| {
        let row = runs::decode_head(key, value)?;
        Ok(keys::run_by_record(&row.record, &row.id))
    })?;
    build_index(backend, keys::TASK, |key, value| {
        let task: Task = decode_value(key, value)?;
        Ok(owner_task_key(
            task.owner.as_deref().unwrap_or(""),
            &task.id,
        ))
    })
}

/// Writes an index entry for every item of `table`; `entry` names the
/// index key of an item from its key and value.
fn build_index<B: Backend>(
    backend: &B,
    table: &[u8],
    entry: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, StoreError>,
) -> Result<(), StoreError> {
    const CHUNK: usize = 1_000;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = backend.scan(table, after.as_deref(), CHUNK)?;
        let exhausted = chunk.len() < CHUNK;
        let writes = chunk
            .iter()
            .map(|(key, value)| Ok(KvWrite::Put(entry(key, value)?, Vec::new())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        backend.apply(writes)?;
        after = chunk.last().map(|(key, _)| key.clone());
        if exhausted {
            return Ok(());
        }
    }
}
