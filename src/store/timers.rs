//! Timers, keyed by due time so firing reads only what is due.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value};
use super::*;

impl<B: Backend> TimerTable for KvStore<B> {
    fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.scan_due(keys::TIMER, now, limit)?
            .into_iter()
            .map(|(key, value)| decode_value(&key, &value))
            .collect()
    }

    fn pending_timers(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::TIMER, limit)
    }

    fn next_timer(&self) -> Result<Option<Timer>, StoreError> {
        self.first_due(keys::TIMER)?
            .map(|(key, value)| decode_value(&key, &value))
            .transpose()
    }
}

/// Writes new timers and deletes done ones (by due time and id).
pub(super) fn stage(
    timers: &[Timer],
    done: &[(DateTime<Utc>, String)],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for t in timers {
        w.push(KvWrite::Put(keys::timer(t.due_at, &t.id), encode_value(t)?));
    }
    for (due, id) in done {
        w.push(KvWrite::Delete(keys::timer(*due, id)));
    }
    Ok(())
}
