//! The newest events of the log, kept decoded.
//!
//! The engine worker reads each event right after it was appended, a few
//! milliseconds later. Reading it back from the backend meant finding its
//! row and decoding it again, about 5% of the daemon's CPU under W1; the
//! store keeps what it appended last and answers the worker from here.
//!
//! Only the writer fills it (and empties it of what retention prunes), right after the batch holding the events was
//! applied and while it still holds the writer lock, so it never holds an
//! event the backend does not, and its events are consecutive: a read it
//! can answer (it holds the first event asked for, or the last event
//! appended is the one the reader has) is answered exactly as the backend
//! would, or cut short where a newer append has not arrived yet, which the
//! next read finds (the writer rings after it fills this list).

use crate::state::Event;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Events kept: four of the worker's rounds, so a worker that keeps up
/// never reads the backend, and one that falls behind reads it until it
/// has caught up again.
const KEPT: usize = 1024;

/// The log's last events, consecutive, oldest first.
#[derive(Default)]
pub(super) struct RecentEvents(Mutex<VecDeque<Event>>);

impl RecentEvents {
    /// Keeps events just appended. They follow the ones kept, unless the
    /// log was written another way meanwhile (then only they are kept).
    /// Answers the events no longer kept, for the caller to drop once it
    /// has let go of the writer lock: freeing them was most of this call's
    /// time, and every writer waits on that lock.
    #[must_use = "drop the events no longer kept outside the writer lock"]
    pub fn appended(&self, events: Vec<Event>) -> Vec<Event> {
        let mut kept = self.lock();
        let follows = |first: &Event| kept.back().is_none_or(|last| last.seq + 1 == first.seq);
        let mut gone = Vec::new();
        if events.first().is_some_and(|first| !follows(first)) {
            gone.extend(kept.drain(..));
        }
        kept.extend(events);
        let extra = kept.len().saturating_sub(KEPT);
        gone.extend(kept.drain(..extra));
        gone
    }

    /// Forgets the events up to `seq`: retention took them from the log.
    pub fn pruned_through(&self, seq: u64) {
        let mut kept = self.lock();
        while kept.front().is_some_and(|e| e.seq <= seq) {
            kept.pop_front();
        }
    }

    /// The events after `seq`, at most `limit`, if the first of them is
    /// kept, or none if `seq` is the last event appended (a worker that
    /// keeps up asks this whenever it wakes with nothing new); `None` sends
    /// the reader to the backend.
    pub fn after(&self, seq: u64, limit: usize) -> Option<Vec<Event>> {
        let kept = self.lock();
        let first = kept.front()?.seq;
        let last = kept.back()?.seq;
        if last == seq {
            return Some(Vec::new());
        }
        if seq.checked_add(1)? < first || last < seq {
            return None;
        }
        let skip = usize::try_from(seq + 1 - first).ok()?;
        let end = kept.len().min(skip.saturating_add(limit));
        Some(kept.range(skip..end).cloned().collect())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Nothing panics while holding it; a poisoned list is still whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewEvent;

    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        seqs.map(|seq| {
            let new = NewEvent::form(&format!("e{seq}"), "L1");
            Event {
                seq,
                id: format!("e{seq}"),
                event_type: new.event_type,
                record: new.record,
                fields: new.fields,
                data: new.data,
                occurred_at: new.occurred_at,
                depth: 0,
            }
        })
        .collect()
    }

    fn seqs(events: Option<Vec<Event>>) -> Option<Vec<u64>> {
        events.map(|e| e.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn answers_only_reads_that_start_inside_what_it_keeps() {
        let recent = RecentEvents::default();
        assert_eq!(seqs(recent.after(0, 10)), None, "nothing kept");
        assert!(recent.appended(events(5..=7)).is_empty());
        assert!(recent.appended(events(8..=9)).is_empty());
        assert_eq!(seqs(recent.after(4, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(recent.after(6, 2)), Some(vec![7, 8]));
        assert_eq!(seqs(recent.after(3, 10)), None, "event 4 is not kept");
        assert_eq!(seqs(recent.after(9, 10)), Some(vec![]), "9 is the last");
        assert_eq!(seqs(recent.after(10, 10)), None, "10 was not appended here");
    }

    #[test]
    fn a_gap_starts_over_and_the_oldest_go_first() {
        let recent = RecentEvents::default();
        assert!(recent.appended(events(1..=3)).is_empty());
        let gone = recent.appended(events(10..=11));
        assert_eq!(seqs(Some(gone)), Some(vec![1, 2, 3]), "what the gap ended");
        assert_eq!(seqs(recent.after(3, 10)), None, "4 to 9 were never kept");
        assert_eq!(seqs(recent.after(9, 10)), Some(vec![10, 11]));
        let gone = recent.appended(events(12..=(11 + KEPT as u64)));
        assert_eq!(
            seqs(Some(gone)),
            Some(vec![10, 11]),
            "the oldest, to be dropped"
        );
        assert_eq!(
            seqs(recent.after(10, 1)),
            None,
            "11 went to keep the newest"
        );
        assert_eq!(seqs(recent.after(11, 1)), Some(vec![12]));
        recent.pruned_through(12);
        assert_eq!(seqs(recent.after(11, 1)), None, "12 was pruned");
        assert_eq!(seqs(recent.after(12, 1)), Some(vec![13]));
    }
}
