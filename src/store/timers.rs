//! Timers, keyed by due time so firing reads only what is due.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value};
use super::*;

impl<B: Backend> TimerTable for KvStore<B> {
    fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Result<Timer, SetAsideTimer>>, StoreError> {
        self.scan_due(keys::TIMER, now, limit)?
            .into_iter()
            .map(|(key, value)| match decode_value(&key, &value) {
                Ok(timer) => Ok(Ok(timer)),
                Err(error) => set_aside(&key, value, &error, now).map(Err).ok_or(error),
            })
            .collect()
    }

    fn pending_timers(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::TIMER, limit)
    }

    fn next_timer(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // From the key: a row that does not decode is still due then (and
        // set aside when it is).
        self.next_due(keys::TIMER)
    }
}

/// The set-aside row of a timer row that does not decode, if its key
/// still says which timer it was.
fn set_aside(
    key: &[u8],
    stored: Vec<u8>,
    error: &StoreError,
    now: DateTime<Utc>,
) -> Option<SetAsideTimer> {
    let (due_at, id) = keys::timer_parts(key)?;
    Some(SetAsideTimer {
        id,
        due_at,
        error: error.to_string(),
        at: now,
        stored,
    })
}

/// Keeps timers set aside under their due time and id.
pub(super) fn stage_set_aside(
    timers: &[SetAsideTimer],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for timer in timers {
        let key = keys::set_aside_timer(timer.due_at, &timer.id);
        w.push(KvWrite::Put(key, encode_value(timer)?));
    }
    Ok(())
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
