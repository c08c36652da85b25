//! The figures pages show that come from whole tables (the pipeline report
//! and who is in each stage, the sequences report), kept per store commit
//! so a page view does not rescan the store.
//!
//! A page asks for figures as of the latest commit. When they were cheap
//! to build last time they are rebuilt at once, so a small team always
//! sees exact numbers; when they were not (a quarter of a million deals),
//! the page gets the last figures built and one rebuild starts behind it,
//! whose end rings [`Figures::rebuilt`] so live pages fetch again. Slow
//! rebuilds wait [`REST`] times their own length after the last one, so a
//! console left open on a busy daemon costs a tenth of a core at most.

use crate::config::Workflows;
use crate::report::{PipelineReport, PipelineReportBuilder};
use crate::state::RecordKey;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

/// Builds slower than this are done behind the page, not before it.
const INLINE_BUILD: Duration = Duration::from_millis(50);

/// A slow rebuild starts no sooner than this many times its length after
/// the previous one ended.
const REST: u32 = 10;

/// Periods kept at once (each `?since=` a page was asked with).
const PERIODS_KEPT: usize = 16;

/// One record in a stage now.
#[derive(Debug, Clone)]
pub struct Member {
    /// The record.
    pub key: RecordKey,
    /// When it entered the stage.
    pub entered_at: DateTime<Utc>,
    /// Whether it stalled in this visit.
    pub stalled: bool,
}

/// The pipeline report and who is in each stage, from one pass.
#[derive(Debug, Default)]
pub struct PipelineFigures {
    /// The report of each pipeline.
    pub reports: Vec<PipelineReport>,
    /// Records in each (pipeline, stage) now, longest there first.
    pub members: HashMap<(String, String), Vec<Member>>,
}

impl PipelineFigures {
    /// Reads the stage history once.
    pub fn build<S: Store>(
        store: &S,
        workflows: &Workflows,
        since: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let mut report = PipelineReportBuilder::new(workflows, since);
        let mut members: HashMap<(String, String), Vec<Member>> = HashMap::new();
        crate::report::each_valued_history(store, workflows, &mut |record, visits, value| {
            if let Some(now) = visits.last().filter(|v| v.exited_at.is_none()) {
                members
                    .entry((now.pipeline.clone(), now.stage.clone()))
                    .or_default()
                    .push(Member {
                        key: record.clone(),
                        entered_at: now.entered_at,
                        stalled: now.stalls > 0,
                    });
            }
            report.add_valued(&record, &visits, value);
        })?;
        for list in members.values_mut() {
            list.sort_by(|a, b| {
                a.entered_at
                    .cmp(&b.entered_at)
                    .then_with(|| a.key.cmp(&b.key))
            });
        }
        Ok(PipelineFigures {
            reports: report.finish(),
            members,
        })
    }
}

/// Sends delivery stopped working on, for a person to decide.
#[derive(Debug, Default)]
pub struct StuckSends {
    /// Given up on.
    pub dead: Vec<crate::state::OutboxEntry>,
    /// Interrupted while handed over, held for a person.
    pub held: Vec<crate::state::OutboxEntry>,
}

/// Figures built as of one commit.
struct Built<T> {
    commit: u64,
    took: Duration,
    ended: Instant,
    value: Arc<T>,
}

/// One kind of figures, per key (a period), with at most one rebuild
/// running behind pages at a time.
struct Slot<T> {
    built: Mutex<HashMap<String, Built<T>>>,
    rebuilding: Mutex<std::collections::HashSet<String>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            built: Mutex::new(HashMap::new()),
            rebuilding: Mutex::new(Default::default()),
        }
    }
}

/// The console's cached figures.
#[derive(Default)]
pub struct Figures {
    pipeline: Arc<Slot<PipelineFigures>>,
    sequences: Arc<Slot<BTreeMap<String, crate::report::SequenceFigures>>>,
    stuck: Arc<Slot<StuckSends>>,
    /// Rung when a rebuild behind the pages finished.
    pub rebuilt: tokio::sync::watch::Sender<u64>,
}

impl Figures {
    /// The pipeline figures for visits entered since `since` (`period`
    /// names it, e.g. "30d").
    pub async fn pipeline<S: Store>(
        &self,
        store: Arc<S>,
        workflows: Arc<Workflows>,
        period: &str,
        since: DateTime<Utc>,
    ) -> Result<Arc<PipelineFigures>, StoreError> {
        let key = pipeline_key(&workflows, period, since);
        let commits = store.wakeups().commits.subscribe();
        self.get(&self.pipeline, key, commits, move || {
            PipelineFigures::build(store.as_ref(), &workflows, since)
        })
        .await
    }

    /// Builds the pipeline figures behind the caller (the warm-up at start).
    pub fn warm_pipeline<S: Store>(
        &self,
        store: Arc<S>,
        workflows: Arc<Workflows>,
        period: &str,
        since: DateTime<Utc>,
    ) {
        let key = pipeline_key(&workflows, period, since);
        let commits = store.wakeups().commits.subscribe();
        self.rebuild_behind(&self.pipeline, key, commits, Duration::ZERO, move || {
            PipelineFigures::build(store.as_ref(), &workflows, since)
        });
    }

    /// The dead and held sends, at most `limit` of each: finding them reads
    /// the whole outbox (there is no index by state), so it is kept like
    /// the reports.
    pub async fn stuck_sends<S: Store>(
        &self,
        store: Arc<S>,
        limit: usize,
    ) -> Result<Arc<StuckSends>, StoreError> {
        let commits = store.wakeups().commits.subscribe();
        self.get(&self.stuck, String::new(), commits, move || {
            let of = |status| {
                let filter = crate::store::OutboxFilter {
                    status: Some(status),
                    record: None,
                };
                store
                    .outbox_matching(&filter, None, limit)
                    .map(|page| page.items)
            };
            Ok(StuckSends {
                dead: of(crate::state::OutboxStatus::Dead)?,
                held: of(crate::state::OutboxStatus::Held)?,
            })
        })
        .await
    }

    /// The sequences report.
    pub async fn sequences<S: Store>(
        &self,
        store: Arc<S>,
    ) -> Result<Arc<BTreeMap<String, crate::report::SequenceFigures>>, StoreError> {
        let commits = store.wakeups().commits.subscribe();
        self.get(&self.sequences, String::new(), commits, move || {
            crate::report::sequences_report(store.as_ref())
        })
        .await
    }

    async fn get<T: Send + Sync + 'static>(
        &self,
        slot: &Arc<Slot<T>>,
        key: String,
        commits: tokio::sync::watch::Receiver<u64>,
        build: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Arc<T>, StoreError> {
        let commit = *commits.borrow();
        let last = lock(&slot.built)
            .get(&key)
            .map(|b| (b.commit, b.took, b.ended, b.value.clone()));
        match last {
            Some((at, _, _, value)) if at >= commit => Ok(value),
            Some((_, took, ended, value)) if took > INLINE_BUILD => {
                let rest = (took * REST).saturating_sub(ended.elapsed());
                self.rebuild_behind(slot, key, commits, rest, build);
                Ok(value)
            }
            None if lock(&slot.rebuilding).contains(&key) => {
                // Being built already (the warm-up at start): wait for it
                // rather than scan the store a second time beside it.
                let mut rebuilt = self.rebuilt.subscribe();
                loop {
                    if let Some(b) = lock(&slot.built).get(&key) {
                        return Ok(b.value.clone());
                    }
                    if !lock(&slot.rebuilding).contains(&key) || rebuilt.changed().await.is_err() {
                        break;
                    }
                }
                Box::pin(self.get(slot, key, commits, build)).await
            }
            _ => {
                let built = tokio::task::spawn_blocking(move || timed(build))
                    .await
                    .map_err(|e| {
                        StoreError::backend_said(format!("building figures failed: {e}"))
                    })??;
                let value = built.1.clone();
                keep(slot, key, commit, built);
                Ok(value)
            }
        }
    }

    /// Starts one rebuild after `rest` (unless one is waiting or running);
    /// it records the commit it started at, so a commit made while it runs
    /// makes its figures stale again.
    fn rebuild_behind<T: Send + Sync + 'static>(
        &self,
        slot: &Arc<Slot<T>>,
        key: String,
        commits: tokio::sync::watch::Receiver<u64>,
        rest: Duration,
        build: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) {
        if !lock(&slot.rebuilding).insert(key.clone()) {
            return;
        }
        let slot = slot.clone();
        let rebuilt = self.rebuilt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(rest).await;
            let commit = *commits.borrow();
            let done = tokio::task::spawn_blocking(move || timed(build)).await;
            match done {
                Ok(Ok(built)) => {
                    keep(&slot, key.clone(), commit, built);
                    rebuilt.send_modify(|n| *n += 1);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "Rebuilding console figures failed."),
                Err(e) => tracing::warn!(error = %e, "Rebuilding console figures failed."),
            }
            lock(&slot.rebuilding).remove(&key);
        });
    }
}

/// The config version is part of the key (a reload can rename stages),
/// and so is the day: a quiet daemon's period still moves.
fn pipeline_key(workflows: &Workflows, period: &str, since: DateTime<Utc>) -> String {
    format!("{}/{period}/{}", workflows.version, since.date_naive())
}

fn timed<T>(
    build: impl FnOnce() -> Result<T, StoreError>,
) -> Result<(Duration, Arc<T>), StoreError> {
    let started = Instant::now();
    let value = build()?;
    Ok((started.elapsed(), Arc::new(value)))
}

fn keep<T>(slot: &Slot<T>, key: String, commit: u64, (took, value): (Duration, Arc<T>)) {
    let mut built = lock(&slot.built);
    if built.len() >= PERIODS_KEPT && !built.contains_key(&key) {
        built.clear();
    }
    if built.get(&key).is_none_or(|b| b.commit <= commit) {
        built.insert(
            key,
            Built {
                commit,
                took,
                ended: Instant::now(),
                value,
            },
        );
    }
}

/// A poisoned lock only means a builder panicked; the map is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StageVisit;
    use crate::store::{Changes, KvStore, MemoryBackend};

    fn visit(stage: &str, at: DateTime<Utc>) -> StageVisit {
        StageVisit {
            pipeline: "b2b".into(),
            stage: stage.into(),
            entered_at: at,
            ..StageVisit::default()
        }
    }

    #[tokio::test]
    async fn cheap_figures_are_exact_after_every_commit() {
        let workflows = Arc::new(crate::config::load_for_tests(
            "pipelines:\n  - name: b2b\n    for: deal\n    stages:\n      - { name: new }\n      - { name: won, outcome: won }\n",
        ));
        let store = Arc::new(KvStore::open(MemoryBackend::default(), "memory").unwrap());
        let at: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let key = |id: &str| RecordKey {
            kind: "deal".into(),
            id: id.into(),
        };
        let add = |id: &str, i: u64, stage: &str| {
            store
                .commit(Changes::from(crate::state::Effects {
                    stage_visits: vec![(key(id), i, visit(stage, at))],
                    ..crate::state::Effects::default()
                }))
                .unwrap();
        };
        let figures = Figures::default();
        let now_in = |f: &PipelineFigures, stage: &str| {
            f.members
                .get(&("b2b".to_owned(), stage.to_owned()))
                .map_or(0, Vec::len)
        };
        add("D1", 0, "new");
        let first = figures
            .pipeline(store.clone(), workflows.clone(), "30d", at)
            .await
            .unwrap();
        assert_eq!(now_in(&first, "new"), 1);
        let same = figures
            .pipeline(store.clone(), workflows.clone(), "30d", at)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &same), "no commit, no rebuild");
        add("D2", 0, "new");
        let after = figures
            .pipeline(store.clone(), workflows.clone(), "30d", at)
            .await
            .unwrap();
        assert_eq!(now_in(&after, "new"), 2);
        assert_eq!(after.reports[0].stages[0].1.entered, 2);
        // Another period is its own entry.
        let later = at + chrono::Duration::days(1);
        let other = figures
            .pipeline(store.clone(), workflows, "1d", later)
            .await
            .unwrap();
        assert_eq!(other.reports[0].stages[0].1.entered, 0);
    }
}
