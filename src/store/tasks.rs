//! Tasks, with two indexes kept in step on every write: open tasks by owner
//! (least-loaded assignment, a rep's queue) and every task by owner.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page, indexed_page};
use super::*;

/// Index of open tasks by owner, so least-loaded assignment does not scan.
pub(super) const OPEN_TASK: &[u8] = b"ot\0";

/// Every task by owner (`""` for unassigned), for `/v1/tasks?owner=` of
/// any status.
pub(super) const OWNER_TASK: &[u8] = b"ow\0";

pub(super) fn open_task_key(owner: &str, id: &str) -> Vec<u8> {
    keys::join(&[OPEN_TASK, &keys::part(owner), b"\0", id.as_bytes()])
}

pub(super) fn owner_task_key(owner: &str, id: &str) -> Vec<u8> {
    keys::join(&[OWNER_TASK, &keys::part(owner), b"\0", id.as_bytes()])
}

impl<B: Backend> KvStore<B> {
    pub(super) fn stage_task(
        &self,
        task: &Task,
        writes: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        let owner = task.owner.as_deref().unwrap_or("");
        let old = self.get::<Task>(&keys::task(&task.id))?;
        let old_owner = old.as_ref().map(|o| o.owner.as_deref().unwrap_or(""));
        if let Some(before) = old_owner {
            writes.push(KvWrite::Delete(open_task_key(before, &task.id)));
        }
        // The owner index changes only when the owner does.
        if old_owner != Some(owner) {
            if let Some(before) = old_owner {
                writes.push(KvWrite::Delete(owner_task_key(before, &task.id)));
            }
            writes.push(KvWrite::Put(owner_task_key(owner, &task.id), Vec::new()));
        }
        if task.status == TaskStatus::Open {
            writes.push(KvWrite::Put(open_task_key(owner, &task.id), Vec::new()));
        }
        writes.push(KvWrite::Put(keys::task(&task.id), encode_value(task)?));
        Ok(())
    }
}

impl<B: Backend> TaskTable for KvStore<B> {
    fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.get(&keys::task(id))
    }

    fn tasks(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Task>, StoreError> {
        let keep = |t: &Task| {
            let owner_ok = filter
                .owner
                .as_deref()
                .is_none_or(|o| t.owner.as_deref().unwrap_or("") == o);
            let status_ok = filter.status.is_none_or(|s| t.status == s);
            let record_ok = filter.record.as_ref().is_none_or(|r| &t.record == r);
            owner_ok && status_ok && record_ok
        };
        // A person's tasks come from an owner index, not a scan of every task.
        let index = match (&filter.owner, filter.status) {
            (Some(owner), Some(TaskStatus::Open)) => Some((OPEN_TASK, owner)),
            (Some(owner), _) => Some((OWNER_TASK, owner)),
            (None, _) => None,
        };
        match index {
            Some((table, owner)) => {
                let prefix = keys::join(&[table, &keys::part(owner), b"\0"]);
                indexed_page(self, &prefix, keys::TASK, after, limit, keep)
            }
            None => filtered_page(self, keys::TASK, after, limit, false, decode_value, keep),
        }
    }

    fn open_task_count(&self, owner: &str) -> Result<usize, StoreError> {
        let prefix = keys::join(&[OPEN_TASK, &keys::part(owner), b"\0"]);
        Ok(self.backend.scan(&prefix, None, usize::MAX)?.len())
    }
}
