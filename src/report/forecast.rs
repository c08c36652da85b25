//! Forecast accuracy (SPEC §3.4): once a day the weighted forecast of each
//! forecasting pipeline is kept, and `report forecast` sets the forecasts
//! made 30, 60 and 90 days ago against the value actually won since.
//!
//! The snapshot is this module's one write: a whole-table read once a day,
//! on its own task, never on the engine worker.

use super::pipeline::PipelineReportBuilder;
use crate::clock::Clock;
use crate::config::Workflows;
use crate::state::ForecastSnapshot;
use crate::store::{ForecastWrites, Store, StoreError};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far back `report forecast` looks, in days.
pub const HORIZONS: [u32; 3] = [30, 60, 90];

/// Today's snapshot of every forecasting pipeline, from one pass over the
/// stage history.
pub fn snapshots<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<Vec<ForecastSnapshot>, StoreError> {
    if workflows.pipelines.values().all(|p| p.value.is_none()) {
        return Ok(Vec::new());
    }
    // Open deals do not depend on the period; an empty one reads no more.
    let reports = super::pipeline_report(store, workflows, now)?;
    Ok(reports
        .into_iter()
        .filter_map(|r| {
            let f = r.forecast?;
            Some(ForecastSnapshot {
                pipeline: r.pipeline,
                day: now.date_naive(),
                taken_at: now,
                open_deals: f.open_deals,
                open_value: f.open_value,
                weighted_value: f.weighted_value,
                weighted_by_owner: r
                    .forecast_by_owner
                    .into_iter()
                    .filter(|(_, o)| o.open_deals > 0)
                    .map(|(owner, o)| (owner, o.weighted_value))
                    .collect(),
            })
        })
        .collect())
}

/// Takes today's snapshots unless every forecasting pipeline has one;
/// answers how many it wrote.
pub fn snapshot_today<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let today = now.date_naive();
    let mut missing = false;
    for p in workflows.pipelines.values().filter(|p| p.value.is_some()) {
        let last = store.forecast_on_or_before(&p.name, today)?;
        missing |= last.is_none_or(|s| s.day != today);
    }
    if !missing {
        return Ok(0);
    }
    let taken = snapshots(store, workflows, now)?;
    let count = taken.len();
    let mut changes = ForecastWrites::default();
    changes.snapshots(taken);
    store.commit(changes.into())?;
    Ok(count)
}

/// Keeps a snapshot a day: at start, then just after each midnight (UTC)
/// on the daemon's clock, until `cancel`. A failed try is retried in a
/// minute; a day the daemon is down has no snapshot, and the report then
/// uses the latest one before it.
pub async fn keep_daily_snapshots<S: Store>(
    store: Arc<S>,
    workflows: Arc<arc_swap::ArcSwap<Workflows>>,
    clock: Arc<dyn Clock>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = clock.now();
        let (s, w) = (store.clone(), workflows.load_full());
        let next = match tokio::task::spawn_blocking(move || snapshot_today(s.as_ref(), &w, now))
            .await
        {
            Ok(Ok(written)) => {
                if written > 0 {
                    tracing::info!(pipelines = written, "Kept today's forecast snapshot.");
                }
                next_midnight(now)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Taking the forecast snapshot failed; trying again in a minute.");
                now + chrono::Duration::minutes(1)
            }
            Err(e) => {
                tracing::error!(error = %e, "The forecast snapshot task failed; trying again in a minute.");
                now + chrono::Duration::minutes(1)
            }
        };
        tokio::select! {
            () = clock.sleep_until(next) => {}
            () = cancel.cancelled() => return,
        }
    }
}

fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    tomorrow
        .and_hms_opt(0, 0, 5)
        .map_or(now + chrono::Duration::days(1), |t| t.and_utc())
}

/// One horizon of one pipeline: the forecast made then against what was
/// won since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonFigures {
    /// Days back.
    pub days: u32,
    /// The day of the snapshot used (that day, or the latest before it);
    /// `None` when there is none that old.
    pub made_on: Option<NaiveDate>,
    /// The weighted forecast then.
    pub forecast: Option<f64>,
    /// Value won since the snapshot (deals whose first outcome was won).
    pub closed: Option<f64>,
    /// Deals won since.
    pub closed_deals: Option<u64>,
    /// `closed / forecast`: 1.0 is a forecast that came true.
    pub ratio: Option<f64>,
    /// Per owner: the forecast then and what they won since.
    pub by_owner: BTreeMap<String, OwnerAccuracy>,
}

/// One owner's forecast then and won value since.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnerAccuracy {
    /// Their weighted forecast then.
    pub forecast: f64,
    /// What they won since.
    pub closed: f64,
}

/// The forecast report of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastAccuracy {
    /// Pipeline name.
    pub pipeline: String,
    /// One row per horizon (30, 60, 90 days).
    pub horizons: Vec<HorizonFigures>,
}

/// Forecasts made [`HORIZONS`] days before `now` against what was won since,
/// for every forecasting pipeline, from one pass over the stage history.
pub fn forecast_report<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<Vec<ForecastAccuracy>, StoreError> {
    let mut made: Vec<(String, u32, Option<ForecastSnapshot>)> = Vec::new();
    for p in workflows.pipelines.values().filter(|p| p.value.is_some()) {
        for days in HORIZONS {
            let day = (now - chrono::Duration::days(i64::from(days))).date_naive();
            made.push((
                p.name.clone(),
                days,
                store.forecast_on_or_before(&p.name, day)?,
            ));
        }
    }
    // One builder per distinct snapshot time: its period's won value is
    // what closed since that forecast.
    let mut since: Vec<DateTime<Utc>> = made
        .iter()
        .filter_map(|(_, _, s)| s.as_ref().map(|s| s.taken_at))
        .collect();
    since.sort();
    since.dedup();
    let mut builders: Vec<PipelineReportBuilder> = since
        .iter()
        .map(|t| PipelineReportBuilder::new(workflows, *t))
        .collect();
    if !builders.is_empty() {
        super::each_valued_history(store, workflows, &mut |record, visits, value| {
            for b in &mut builders {
                b.add_valued(&record, &visits, value);
            }
        })?;
    }
    let finished: Vec<Vec<super::PipelineReport>> = builders
        .into_iter()
        .map(PipelineReportBuilder::finish)
        .collect();
    let mut out: BTreeMap<String, ForecastAccuracy> = BTreeMap::new();
    for (pipeline, days, snapshot) in made {
        let row = match snapshot {
            None => HorizonFigures {
                days,
                made_on: None,
                forecast: None,
                closed: None,
                closed_deals: None,
                ratio: None,
                by_owner: BTreeMap::new(),
            },
            Some(s) => {
                let at = since.iter().position(|t| *t == s.taken_at).unwrap_or(0);
                let report = finished
                    .get(at)
                    .and_then(|rs| rs.iter().find(|r| r.pipeline == pipeline));
                let won = report.and_then(|r| r.forecast.as_ref());
                let mut by_owner: BTreeMap<String, OwnerAccuracy> = s
                    .weighted_by_owner
                    .iter()
                    .map(|(o, f)| {
                        (
                            o.clone(),
                            OwnerAccuracy {
                                forecast: *f,
                                closed: 0.0,
                            },
                        )
                    })
                    .collect();
                for (owner, f) in report.map(|r| &r.forecast_by_owner).into_iter().flatten() {
                    if f.won_value > 0.0 {
                        by_owner.entry(owner.clone()).or_default().closed = f.won_value;
                    }
                }
                let closed = won.map_or(0.0, |f| f.won_value);
                HorizonFigures {
                    days,
                    made_on: Some(s.day),
                    forecast: Some(s.weighted_value),
                    closed: Some(closed),
                    closed_deals: Some(won.map_or(0, |f| f.won_deals)),
                    ratio: (s.weighted_value > 0.0).then(|| closed / s.weighted_value),
                    by_owner,
                }
            }
        };
        out.entry(pipeline.clone())
            .or_insert_with(|| ForecastAccuracy {
                pipeline,
                horizons: Vec::new(),
            })
            .horizons
            .push(row);
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Effects;
    use crate::state::{Record, RecordKey, StageVisit};
    use crate::store::{ForecastTable, KvStore, MemoryBackend, StageHistoryTable};

    const FLOWS: &str = "pipelines:\n  - name: b2b\n    for: deal\n    value: amount\n    stages:\n      - { name: qualified, probability: 0.2 }\n      - { name: proposal, probability: 0.5 }\n      - { name: won, outcome: won }\n      - { name: lost, outcome: lost }\n";

    fn day(d: i64, hour: u32) -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::days(d)
            + chrono::Duration::hours(i64::from(hour))
    }

    /// Moves a deal into a stage at 09:00 of day `d`, as the worker would
    /// commit it: the record, its previous visit closed, the new one open.
    fn enter(
        store: &KvStore<MemoryBackend>,
        id: &str,
        owner: &str,
        amount: f64,
        stage: &str,
        d: i64,
    ) {
        let key = RecordKey {
            kind: "deal".into(),
            id: id.into(),
        };
        let at = day(d, 9);
        let mut history = store.stage_history(&key).unwrap();
        let count = history.len() as u64;
        let mut stage_visits = Vec::new();
        if let Some(last) = history.last_mut() {
            last.exited_at = Some(at);
            stage_visits.push((key.clone(), count - 1, last.clone()));
        }
        let visit = StageVisit {
            pipeline: "b2b".into(),
            stage: stage.into(),
            entered_at: at,
            owner: Some(owner.into()),
            ..StageVisit::default()
        };
        stage_visits.push((key.clone(), count, visit));
        let mut record = Record::new(key, at);
        record
            .fields
            .insert("amount".into(), serde_json::json!(amount));
        record.owner = Some(owner.into());
        record.stage = Some(stage.into());
        store
            .commit(
                Effects {
                    records: vec![record],
                    stage_visits,
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
    }

    #[test]
    fn a_simulated_quarter_gives_exact_forecast_figures() {
        let w = crate::config::load_for_tests(FLOWS);
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let moves: &[(i64, &str, &str, f64, &str)] = &[
            (0, "D1", "ana", 10_000.0, "qualified"),
            (0, "D2", "ben", 20_000.0, "proposal"),
            (20, "D3", "ana", 40_000.0, "qualified"),
            (25, "D1", "ana", 10_000.0, "won"),
            (45, "D2", "ben", 20_000.0, "lost"),
            (50, "D3", "ana", 40_000.0, "proposal"),
            (70, "D3", "ana", 40_000.0, "won"),
            (75, "D4", "ben", 5_000.0, "qualified"),
        ];
        // A daemon running every day of the quarter, its snapshot at noon.
        for d in 0..=90 {
            for (_, id, owner, amount, stage) in moves.iter().filter(|m| m.0 == d) {
                enter(&store, id, owner, *amount, stage, d);
            }
            assert_eq!(
                snapshot_today(&store, &w, day(d, 12)).unwrap(),
                1,
                "day {d}"
            );
            assert_eq!(
                snapshot_today(&store, &w, day(d, 18)).unwrap(),
                0,
                "once a day"
            );
        }
        let report = forecast_report(&store, &w, day(90, 12)).unwrap();
        assert_eq!(report.len(), 1);
        let h = |days: u32| {
            report[0]
                .horizons
                .iter()
                .find(|h| h.days == days)
                .unwrap()
                .clone()
        };
        // 30 days ago (day 60): D3 in proposal, 40,000 × 0.5; D3 was won since.
        let h30 = h(30);
        assert_eq!(h30.made_on, Some(day(60, 0).date_naive()));
        assert_eq!(
            (h30.forecast, h30.closed, h30.closed_deals, h30.ratio),
            (Some(20_000.0), Some(40_000.0), Some(1), Some(2.0))
        );
        assert_eq!(
            h30.by_owner["ana"],
            OwnerAccuracy {
                forecast: 20_000.0,
                closed: 40_000.0
            }
        );
        // 60 days ago (day 30): D2 in proposal (10,000), D3 qualified (8,000);
        // since: D3 won; D2 lost, so Ben closed nothing of his 10,000.
        let h60 = h(60);
        assert_eq!((h60.forecast, h60.closed), (Some(18_000.0), Some(40_000.0)));
        assert_eq!(
            h60.by_owner["ben"],
            OwnerAccuracy {
                forecast: 10_000.0,
                closed: 0.0
            }
        );
        assert_eq!(
            h60.by_owner["ana"],
            OwnerAccuracy {
                forecast: 8_000.0,
                closed: 40_000.0
            }
        );
        // 90 days ago (day 0): D1 qualified (2,000), D2 proposal (10,000);
        // since: D1 and D3 won.
        let h90 = h(90);
        assert_eq!(
            (h90.forecast, h90.closed, h90.closed_deals),
            (Some(12_000.0), Some(50_000.0), Some(2))
        );
        assert_eq!(h90.ratio, Some(50_000.0 / 12_000.0));
        // The snapshot of today: D4 qualified, 5,000 × 0.2.
        let today = store
            .forecast_on_or_before("b2b", day(90, 0).date_naive())
            .unwrap()
            .unwrap();
        assert_eq!((today.open_deals, today.weighted_value), (1, 1_000.0));
        assert_eq!(
            today.weighted_by_owner,
            [("ben".to_owned(), 1_000.0)].into()
        );
    }

    #[test]
    fn a_day_without_a_snapshot_uses_the_one_before_and_none_is_said_plainly() {
        let w = crate::config::load_for_tests(FLOWS);
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        enter(&store, "D1", "ana", 1_000.0, "proposal", 0);
        snapshot_today(&store, &w, day(0, 12)).unwrap();
        let report = forecast_report(&store, &w, day(40, 12)).unwrap();
        let h = &report[0].horizons;
        // 30 days ago (day 10) the daemon was down: day 0's snapshot stands.
        assert_eq!(h[0].made_on, Some(day(0, 0).date_naive()));
        assert_eq!(h[0].forecast, Some(500.0));
        assert_eq!(
            (h[1].made_on, h[1].forecast, h[1].ratio),
            (None, None, None)
        );
        // Pipelines without value: take no snapshots.
        let plain = crate::config::load_for_tests(
            "pipelines:\n  - name: b2b\n    for: deal\n    stages:\n      - { name: qualified }\n",
        );
        assert_eq!(snapshot_today(&store, &plain, day(41, 12)).unwrap(), 0);
        assert!(
            forecast_report(&store, &plain, day(41, 12))
                .unwrap()
                .is_empty()
        );
    }
}
