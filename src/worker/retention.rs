//! Retention: runs older than `settings.keep_runs` are forgotten, so run
//! history does not grow the store without bound. The worker prunes a
//! bounded amount at a time, between rounds.

use crate::store::{Changes, RunRow, Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Rows of runs read per page (an event's runs share a row).
const PAGE: usize = 512;
/// Pages looked at per call, so one call never holds up the worker long.
const PAGES_PER_CALL: usize = 20;

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Runs deleted.
    pub runs: usize,
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
            runs: 0,
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
                runs: pruned,
                more: false,
            });
        }
        pruned += old.iter().map(|r| r.runs).sum::<usize>();
        let old = old.into_iter().map(|r| r.id.clone()).collect();
        after = page.last().map(|r| r.id.clone());
        store.commit(Changes {
            runs_pruned: old,
            ..Changes::default()
        })?;
        if page.len() < PAGE {
            return Ok(Pruned {
                runs: pruned,
                more: false,
            });
        }
    }
    Ok(Pruned {
        runs: pruned,
        more: true,
    })
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
    use crate::state::{RecordKey, Run};
    use crate::store::{KvStore, MemoryBackend, RunFilter};

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
            .commit(Changes {
                runs,
                ..Changes::default()
            })
            .unwrap();
        let keep = Duration::from_secs(90 * 86_400);
        let pruned = prune_runs(&store, keep, day(100)).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                runs: 2_400,
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
        assert_eq!(prune_runs(&store, keep, day(100)).unwrap().runs, 0);
        // At day 186 only the run of day 95 is past 90 days.
        assert_eq!(prune_runs(&store, keep, day(186)).unwrap().runs, 1);
    }

    #[test]
    fn a_retention_longer_than_time_itself_prunes_nothing() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        store
            .commit(Changes {
                runs: vec![run(1, "00", day(1))],
                ..Changes::default()
            })
            .unwrap();
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(prune_runs(&store, forever, day(2)).unwrap().runs, 0);
        assert_eq!(ids(&store).len(), 1);
    }
}
