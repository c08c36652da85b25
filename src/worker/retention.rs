//! Retention: runs older than `settings.keep_runs` and handled events
//! older than `settings.keep_events` are forgotten, so neither grows the
//! store without bound. The worker prunes a bounded amount at a time,
//! between rounds.
//!
//! Events carry the time they happened (`occurred_at`, the sender's, which
//! may be years back for an import), not when they were stored. The log is
//! in the order events were stored, so retention marks it now and then
//! (time → next sequence number) and an event is as old as the first mark
//! after it: pruning by mark never drops a just-imported old event's id
//! from the deduplication window.

use crate::store::{EventMark, PruneWrites, RunRow, Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Rows of runs read per page (an event's runs share a row).
const PAGE: usize = 512;
/// Pages looked at per call, so one call never holds up the worker long.
const PAGES_PER_CALL: usize = 20;

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Runs (or events) deleted.
    pub count: usize,
    /// Whether it stopped at its page limit with more perhaps to delete.
    pub more: bool,
}

/// Deletes runs older than `keep`, a row at a time (a row's runs share their
/// time). Rows are read in the log order of their events, which is their
/// time order except for a delivery's run (written when it gave up, under
/// its original event): reading goes on while a page holds anything to
/// delete and stops at the first page that holds none.
pub fn prune_runs<S: Store>(
    store: &S,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Pruned, StoreError> {
    let Some(cutoff) = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
    else {
        return Ok(Pruned {
            count: 0,
            more: false,
        });
    };
    let mut pruned = 0;
    let mut after: Option<String> = None;
    for _ in 0..PAGES_PER_CALL {
        let page = store.run_rows_in_log_order(after.as_deref(), PAGE)?;
        let old: Vec<&RunRow> = page.iter().filter(|r| r.at < cutoff).collect();
        if old.is_empty() {
            return Ok(Pruned {
                count: pruned,
                more: false,
            });
        }
        pruned += old.iter().map(|r| r.runs).sum::<usize>();
        let mut forget = PruneWrites::default();
        forget.forget_runs(old.into_iter().map(|r| r.id.clone()));
        after = page.last().map(|r| r.id.clone());
        store.commit(forget.into())?;
        if page.len() < PAGE {
            return Ok(Pruned {
                count: pruned,
                more: false,
            });
        }
    }
    Ok(Pruned {
        count: pruned,
        more: true,
    })
}

/// Rows of the log looked at per call.
const EVENT_ROWS: usize = 2_048;

/// How often the log is marked: events are dated to within this.
fn mark_every(keep: Duration) -> Duration {
    (keep / 50).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Marks the log now (when the last mark is old enough), then deletes the
/// rows of handled events stored before `now - keep`, the deduplication
/// entries of their ids, and the marks no longer needed.
pub fn prune_events<S: Store>(
    store: &S,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Pruned, StoreError> {
    let mut changes = PruneWrites::default();
    let every = chrono::Duration::from_std(mark_every(keep)).unwrap_or(chrono::Duration::hours(1));
    if store
        .event_mark_before(now)?
        .is_none_or(|last| now - last.at >= every)
    {
        // Read before the mark's time: every event below it is older.
        let seq = store.last_seq()?.saturating_add(1);
        changes.mark([EventMark { at: now, seq }]);
    }
    let cutoff = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep));
    let mark = match cutoff {
        Some(cutoff) => store.event_mark_before(cutoff)?,
        None => None,
    };
    let mut pruned = Pruned {
        count: 0,
        more: false,
    };
    if let Some(mark) = mark {
        // Only handled events: the engine still needs the others.
        let below = mark.seq.min(store.cursor()?.saturating_add(1));
        let rows = store.oldest_event_rows(EVENT_ROWS)?;
        let full = rows.len() == EVENT_ROWS;
        let old: Vec<_> = rows.into_iter().take_while(|r| r.last < below).collect();
        pruned = Pruned {
            count: old.iter().map(|r| r.ids.len()).sum(),
            more: full && old.len() == EVENT_ROWS,
        };
        changes.forget_events(old).forget_marks(
            store
                .event_marks_before(mark.at, EVENT_ROWS)?
                .into_iter()
                .map(|m| m.at),
        );
    }
    if !changes.is_empty() {
        store.commit(changes.into())?;
    }
    Ok(pruned)
}

/// When to prune next: soon while behind, else after a while (a minute,
/// or half the retention when that is shorter, as in tests).
pub fn next_prune(now: DateTime<Utc>, keep: Duration, last: Pruned) -> DateTime<Utc> {
    let wait = if last.more {
        Duration::from_secs(1)
    } else {
        (keep / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
    };
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Effects;
    use crate::state::{RecordKey, Run};
    use crate::store::{EventTable, KvStore, MemoryBackend, RunFilter};

    fn run(seq: u64, suffix: &str, at: DateTime<Utc>) -> Run {
        Run {
            id: format!("{seq:016}-{suffix}"),
            rule: "r".into(),
            event_id: format!("e{seq}"),
            event_type: "t".into(),
            record: RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            version: String::new(),
            condition: None,
            matched: true,
            saw: Default::default(),
            actions: Vec::new(),
            at,
            error: None,
        }
    }

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::days(d)
    }

    fn ids<S: Store>(store: &S) -> Vec<String> {
        let page = store.runs(&RunFilter::default(), None, 10_000).unwrap();
        let mut ids: Vec<String> = page.items.into_iter().map(|r| r.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn runs_past_retention_go_and_newer_ones_stay() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        // 1,200 old events of two runs each (a row each, past two pages), a
        // delivery run of an old event written late, then two recent runs.
        let mut runs: Vec<Run> = (1..=1_200)
            .flat_map(|i| [run(i, "00", day(1)), run(i, "01", day(1))])
            .collect();
        runs.push(run(5, "delivery", day(99)));
        runs.extend([run(1_201, "00", day(95)), run(1_202, "00", day(99))]);
        store
            .commit(
                Effects {
                    runs,
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        let keep = Duration::from_secs(90 * 86_400);
        let pruned = prune_runs(&store, keep, day(100)).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                count: 2_400,
                more: false
            }
        );
        assert_eq!(
            ids(&store),
            [
                "0000000000000005-delivery",
                "0000000000001201-00",
                "0000000000001202-00"
            ]
        );
        // Nothing more to do until the next one ages out.
        assert_eq!(prune_runs(&store, keep, day(100)).unwrap().count, 0);
        // At day 186 only the run of day 95 is past 90 days.
        assert_eq!(prune_runs(&store, keep, day(186)).unwrap().count, 1);
    }

    #[test]
    fn a_retention_longer_than_time_itself_prunes_nothing() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        store
            .commit(
                Effects {
                    runs: vec![run(1, "00", day(1))],
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(prune_runs(&store, forever, day(2)).unwrap().count, 0);
        assert_eq!(ids(&store).len(), 1);
    }

    fn events(
        ids: std::ops::Range<u32>,
        occurred_at: DateTime<Utc>,
    ) -> Vec<crate::state::NewEvent> {
        ids.map(|n| crate::state::NewEvent {
            id: Some(format!("e{n}")),
            event_type: "form.submitted".into(),
            record: RecordKey {
                kind: "lead".into(),
                id: format!("L{n}"),
            },
            fields: Default::default(),
            data: Default::default(),
            occurred_at,
            depth: 0,
        })
        .collect()
    }

    fn seqs<S: Store>(store: &S) -> Vec<u64> {
        store
            .events_after(0, 1_000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    fn handled<S: Store>(store: &S, seq: u64) {
        store
            .commit(
                Effects {
                    handled: Some(seq),
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
    }

    #[test]
    fn handled_events_stored_before_the_window_go_with_their_ids() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let keep = Duration::from_secs(7 * 86_400);
        // Ten events stored on day 0, though they happened years before
        // (an import): their age is when they were stored.
        store.append_events(events(1..11, day(-2_000))).unwrap();
        assert_eq!(prune_events(&store, keep, day(0)).unwrap().count, 0);
        store.append_events(events(11..21, day(1))).unwrap();
        assert_eq!(prune_events(&store, keep, day(1)).unwrap().count, 0);
        handled(&store, 20);
        // A week after day 0 is not yet past it.
        assert_eq!(prune_events(&store, keep, day(6)).unwrap().count, 0);
        assert_eq!(seqs(&store).len(), 20);
        // Past it: the first ten go, with their deduplication entries.
        assert_eq!(prune_events(&store, keep, day(7)).unwrap().count, 10);
        assert_eq!(seqs(&store), (11..=20).collect::<Vec<u64>>());
        let again = store.append_events(events(1..2, day(7))).unwrap();
        assert!(!again[0].duplicate, "its id left the window with it");
        let within = store.append_events(events(11..12, day(7))).unwrap();
        assert!(within[0].duplicate, "a newer id still deduplicates");
        let report = store.check(false).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn events_the_engine_has_not_handled_stay() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let keep = Duration::from_secs(7 * 86_400);
        store.append_events(events(1..11, day(0))).unwrap();
        prune_events(&store, keep, day(0)).unwrap();
        handled(&store, 5);
        // Rows of four: the row holding 5 also holds 6, which is unhandled.
        assert_eq!(prune_events(&store, keep, day(30)).unwrap().count, 4);
        assert_eq!(seqs(&store), (5..=10).collect::<Vec<u64>>());
    }
}
