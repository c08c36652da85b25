//! The figures pages show that come from whole tables (the pipeline report
//! and who is in each stage, the sequences report), kept per store commit
//! so a page view does not rescan the store.
//!
//! A page asks for figures as of the latest commit. When they were cheap
//! to build last time they are rebuilt at once, so a small team always
//! sees exact numbers; when they were not (a quarter of a million deals),
//! the page gets the last figures built and one rebuild starts behind it,
//! whose end rings [`Figures::rebuilt`] so live pages fetch again.

use crate::config::Workflows;
use crate::report::{PipelineReport, PipelineReportBuilder};
use crate::state::{RecordKey, StageVisit};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

/// Builds slower than this are done behind the page, not before it.
const INLINE_BUILD: Duration = Duration::from_millis(50);

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
        let mut failed = Ok(());
        store.each_stage_history(&mut |record: RecordKey, visits: Vec<StageVisit>| {
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
            if failed.is_ok() {
                failed = report.add_reading(store, &record, &visits);
            }
        })?;
        failed?;
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

/// Figures built as of one commit.
struct Built<T> {
    commit: u64,
    took: Duration,
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
        // The config version is part of the key: a reload can rename stages.
        let key = format!("{}/{period}", workflows.version);
        let commit = *store.wakeups().commits.borrow();
        self.get(&self.pipeline, key, commit, move || {
            PipelineFigures::build(store.as_ref(), &workflows, since)
        })
        .await
    }

    /// The sequences report.
    pub async fn sequences<S: Store>(
        &self,
        store: Arc<S>,
    ) -> Result<Arc<BTreeMap<String, crate::report::SequenceFigures>>, StoreError> {
        let commit = *store.wakeups().commits.borrow();
        self.get(&self.sequences, String::new(), commit, move || {
            crate::report::sequences_report(store.as_ref())
        })
        .await
    }

    async fn get<T: Send + Sync + 'static>(
        &self,
        slot: &Arc<Slot<T>>,
        key: String,
        commit: u64,
        build: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Arc<T>, StoreError> {
        let last = lock(&slot.built)
            .get(&key)
            .map(|b| (b.commit, b.took, b.value.clone()));
        match last {
            Some((at, _, value)) if at >= commit => Ok(value),
            Some((_, took, value)) if took > INLINE_BUILD => {
                self.rebuild_behind(slot, key, commit, build);
                Ok(value)
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

    fn rebuild_behind<T: Send + Sync + 'static>(
        &self,
        slot: &Arc<Slot<T>>,
        key: String,
        commit: u64,
        build: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) {
        if !lock(&slot.rebuilding).insert(key.clone()) {
            return;
        }
        let slot = slot.clone();
        let rebuilt = self.rebuilt.clone();
        tokio::task::spawn_blocking(move || {
            match timed(build) {
                Ok(built) => {
                    keep(&slot, key.clone(), commit, built);
                    rebuilt.send_modify(|n| *n += 1);
                }
                Err(e) => tracing::warn!(error = %e, "Rebuilding console figures failed."),
            }
            lock(&slot.rebuilding).remove(&key);
        });
    }
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
