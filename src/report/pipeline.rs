//! The pipeline report: per stage, how many entered, left and are still
//! there, how many moved forward and how many went on to be won, time in
//! stage (median, p90), overall and per owner; win rate and cycle length.
//! Computed in one pass over the stored stage history, one record at a time.
//!
//! How moves are counted: a visit *advanced* when the record's next visit is
//! a later stage in the pipeline's order (skipping stages counts; an
//! outcome stage counts as later); a move back to an earlier stage is
//! counted as `moved_back`. *Won* means the record reached a `won` outcome
//! stage at any later visit. A visit belongs to the period when it was
//! entered in it. Cycle length runs from a record's first visit to its
//! first outcome stage. Stalls and refused moves are counted on the visit
//! the record was in (a refused move is a move *out* of that stage; its
//! unmet requirements may be the stage's exit or the target's entry ones).

use crate::config::Workflows;
use crate::config::model::Outcome;
use crate::config::workflows::Pipeline;
use crate::state::{RecordKey, StageVisit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pipeline's stages in order, each with its figures.
pub type StageRows = Vec<(String, StageFigures)>;

/// One stage's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageFigures {
    /// Visits entered in the period.
    pub entered: u64,
    /// Of those, left again.
    pub exited: u64,
    /// Of those, still there.
    pub still_in: u64,
    /// Moved on to a later stage.
    pub advanced: u64,
    /// Moved back to an earlier stage.
    pub moved_back: u64,
    /// Went on to be won.
    pub won_later: u64,
    /// `advanced / entered`.
    pub conversion_to_next: Option<f64>,
    /// `won_later / entered`.
    pub conversion_to_won: Option<f64>,
    /// Median hours in the stage, of visits that left it.
    pub median_hours_in_stage: Option<f64>,
    /// 90th percentile hours in the stage.
    pub p90_hours_in_stage: Option<f64>,
    /// Visits that stalled at least once.
    pub stalled: u64,
    /// `stage.stalled` notices (a visit stalling twice counts twice).
    pub stall_notices: u64,
    /// Moves out of the stage that were refused.
    pub refused_moves: u64,
    /// Refusals by unmet requirement.
    pub refusals: BTreeMap<String, u64>,
    /// The requirement that blocked most moves out of the stage.
    pub most_blocking: Option<String>,
    /// Forecasting pipelines: deals in the stage now (whenever they entered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_deals: Option<u64>,
    /// Their value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_value: Option<f64>,
    /// Their value times the stage's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_value: Option<f64>,
    #[serde(skip)]
    durations: Vec<f64>,
}

/// The money side of a pipeline that names its value field (SPEC §3.4).
/// Open deals are those in a stage that is not an outcome now, whenever
/// they entered; won deals are those whose first outcome was won, entered
/// in the period. A deal whose value field is missing or not a number
/// counts as a deal worth 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Deals open now.
    pub open_deals: u64,
    /// Their value.
    pub open_value: f64,
    /// Their value times their stage's probability.
    pub weighted_value: f64,
    /// Deals won in the period.
    pub won_deals: u64,
    /// Their value.
    pub won_value: f64,
    /// `won_value / won_deals`.
    pub average_won_value: Option<f64>,
    /// Sales velocity: open deals × average won value × win rate ÷ median
    /// cycle days, the value the pipeline can be expected to close per day.
    pub velocity_per_day: Option<f64>,
    #[serde(skip)]
    closed: Closed,
}

/// Closings counted for one owner's velocity.
#[derive(Debug, Clone, Default, PartialEq)]
struct Closed {
    won: u64,
    lost: u64,
    cycles: Vec<f64>,
}

/// A pipeline's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Stages in the pipeline's order; in JSON `[{"stage": NAME, ...figures}]`.
    #[serde(with = "stage_rows")]
    pub stages: Vec<(String, StageFigures)>,
    /// Per owner (unowned visits under ""), stages in order; in JSON
    /// `[{"owner": EMAIL, "stages": [...]}]`.
    #[serde(with = "owner_rows")]
    pub by_owner: BTreeMap<String, StageRows>,
    /// Records that reached a won stage.
    pub won: u64,
    /// Records that reached a lost stage.
    pub lost: u64,
    /// `won / (won + lost)`.
    pub win_rate: Option<f64>,
    /// Median days from the first visit to the first outcome stage.
    pub median_cycle_days: Option<f64>,
    /// The forecast, when the pipeline names its value field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// The forecast per owner (of the deal's current visit; won deals by
    /// the owner of their won visit).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forecast_by_owner: BTreeMap<String, Forecast>,
    #[serde(skip)]
    cycles: Vec<f64>,
}

/// Stages as JSON objects that name their stage (SPEC §7: no positional pairs).
mod stage_rows {
    use super::StageFigures;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct StageRow {
        stage: String,
        #[serde(flatten)]
        figures: StageFigures,
    }

    pub fn serialize<S: Serializer>(
        stages: &[(String, StageFigures)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(stages.iter().map(|(stage, figures)| StageRow {
            stage: stage.clone(),
            figures: figures.clone(),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, StageFigures)>, D::Error> {
        let rows = Vec::<StageRow>::deserialize(deserializer)?;
        Ok(rows.into_iter().map(|r| (r.stage, r.figures)).collect())
    }
}

/// Owners as JSON objects that name their owner.
mod owner_rows {
    use super::{StageFigures, StageRows};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    struct OwnerRow {
        owner: String,
        #[serde(with = "super::stage_rows")]
        stages: Vec<(String, StageFigures)>,
    }

    pub fn serialize<S: Serializer>(
        owners: &BTreeMap<String, StageRows>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(owners.iter().map(|(owner, stages)| OwnerRow {
            owner: owner.clone(),
            stages: stages.clone(),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, StageRows>, D::Error> {
        let rows = Vec::<OwnerRow>::deserialize(deserializer)?;
        Ok(rows.into_iter().map(|r| (r.owner, r.stages)).collect())
    }
}

impl PipelineReport {
    /// One stage's figures.
    pub fn stage(&self, name: &str) -> Option<&StageFigures> {
        self.stages.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

/// Builds the reports of every pipeline from a stream of record histories.
pub struct PipelineReportBuilder<'w> {
    workflows: &'w Workflows,
    since: DateTime<Utc>,
    reports: BTreeMap<String, PipelineReport>,
}

impl<'w> PipelineReportBuilder<'w> {
    /// A builder for visits entered at or after `since`.
    pub fn new(workflows: &'w Workflows, since: DateTime<Utc>) -> Self {
        let reports = workflows
            .pipelines
            .values()
            .map(|p| {
                let stages = p
                    .stages
                    .iter()
                    .map(|s| (s.name.clone(), StageFigures::default()))
                    .collect();
                (
                    p.name.clone(),
                    PipelineReport {
                        pipeline: p.name.clone(),
                        stages,
                        forecast: p.value.is_some().then(Forecast::default),
                        ..Default::default()
                    },
                )
            })
            .collect();
        PipelineReportBuilder {
            workflows,
            since,
            reports,
        }
    }

    /// Adds one record's history (oldest visit first) with its value, as
    /// [`value_needed`] asked for.
    pub fn add_valued(&mut self, record: &RecordKey, visits: &[StageVisit], value: Option<f64>) {
        self.add(record, visits);
        let Some(pipeline) = self.workflows.pipeline_for(&record.kind) else {
            return;
        };
        let Some(report) = self.reports.get_mut(&pipeline.name) else {
            return;
        };
        if report.forecast.is_none() {
            return;
        }
        let value = value.unwrap_or(0.0);
        let current = visits
            .last()
            .filter(|v| v.exited_at.is_none() && v.pipeline == pipeline.name)
            .and_then(|v| Some((v, pipeline.stage_index(&v.stage)?)))
            .filter(|(_, i)| pipeline.stages[*i].outcome.is_none());
        if let Some((visit, i)) = current {
            let weighted = value * pipeline.stages[i].probability;
            let owner = visit.owner.clone().unwrap_or_default();
            let open = |f: &mut StageFigures| {
                *f.open_deals.get_or_insert(0) += 1;
                *f.open_value.get_or_insert(0.0) += value;
                *f.weighted_value.get_or_insert(0.0) += weighted;
            };
            open(&mut report.stages[i].1);
            open(&mut owner_rows(report, pipeline, &owner)[i].1);
            for f in forecasts(report, &owner) {
                f.open_deals += 1;
                f.open_value += value;
                f.weighted_value += weighted;
            }
        }
        self.add_won_value(record, visits, value);
    }

    /// Adds one record's history (oldest visit first).
    pub fn add(&mut self, record: &RecordKey, visits: &[StageVisit]) {
        let Some(pipeline) = self.workflows.pipeline_for(&record.kind) else {
            return;
        };
        let Some(report) = self.reports.get_mut(&pipeline.name) else {
            return;
        };
        let position = |stage: &str| pipeline.stage_index(stage);
        let outcome_of = |stage: &str| outcome(pipeline, stage);
        for (i, visit) in visits.iter().enumerate() {
            if visit.pipeline != pipeline.name || visit.entered_at < self.since {
                continue;
            }
            let Some(here) = position(&visit.stage) else {
                continue;
            };
            let next = visits.get(i + 1).and_then(|n| position(&n.stage));
            let won_later = visits[i + 1..]
                .iter()
                .any(|v| outcome_of(&v.stage) == Some(Outcome::Won));
            let owner = visit.owner.clone().unwrap_or_default();
            let step = |f: &mut StageFigures| {
                f.entered += 1;
                match visit.exited_at {
                    Some(left) => {
                        f.exited += 1;
                        f.durations
                            .push((left - visit.entered_at).num_seconds() as f64 / 3600.0);
                    }
                    None => f.still_in += 1,
                }
                match next {
                    Some(n) if n > here => f.advanced += 1,
                    Some(n) if n < here => f.moved_back += 1,
                    _ => {}
                }
                if won_later {
                    f.won_later += 1;
                }
                if visit.stalls > 0 {
                    f.stalled += 1;
                    f.stall_notices += u64::from(visit.stalls);
                }
                f.refused_moves += u64::from(visit.refused_moves);
                for (requirement, n) in &visit.refusals {
                    *f.refusals.entry(requirement.clone()).or_default() += u64::from(*n);
                }
            };
            step(&mut report.stages[here].1);
            step(&mut owner_rows(report, pipeline, &owner)[here].1);
        }
        let first_outcome = visits
            .iter()
            .find_map(|v| outcome_of(&v.stage).map(|o| (o, v)));
        if let (Some((result, closing)), Some(first)) = (first_outcome, visits.first())
            && closing.entered_at >= self.since
        {
            let days = (closing.entered_at - first.entered_at).num_seconds() as f64 / 86_400.0;
            match result {
                Outcome::Won => report.won += 1,
                Outcome::Lost => report.lost += 1,
            }
            report.cycles.push(days);
            let owner = closing.owner.clone().unwrap_or_default();
            for f in forecasts(report, &owner) {
                match result {
                    Outcome::Won => f.closed.won += 1,
                    Outcome::Lost => f.closed.lost += 1,
                }
                f.closed.cycles.push(days);
            }
        }
    }

    /// Adds the value of a won deal (first outcome won, in the period).
    fn add_won_value(&mut self, record: &RecordKey, visits: &[StageVisit], value: f64) {
        let Some(pipeline) = self.workflows.pipeline_for(&record.kind) else {
            return;
        };
        let Some(report) = self.reports.get_mut(&pipeline.name) else {
            return;
        };
        let closing = visits
            .iter()
            .find(|v| outcome(pipeline, &v.stage).is_some());
        let Some(closing) = closing.filter(|v| {
            v.entered_at >= self.since && outcome(pipeline, &v.stage) == Some(Outcome::Won)
        }) else {
            return;
        };
        let owner = closing.owner.clone().unwrap_or_default();
        for f in forecasts(report, &owner) {
            f.won_deals += 1;
            f.won_value += value;
        }
    }

    /// The finished reports, in pipeline name order.
    pub fn finish(self) -> Vec<PipelineReport> {
        self.reports
            .into_values()
            .map(|mut r| {
                for (_, f) in &mut r.stages {
                    finish_stage(f);
                }
                for stages in r.by_owner.values_mut() {
                    for (_, f) in stages {
                        finish_stage(f);
                    }
                }
                let closed = r.won + r.lost;
                r.win_rate = (closed > 0).then(|| r.won as f64 / closed as f64);
                r.median_cycle_days = quantile(&mut r.cycles, 0.5);
                if let Some(f) = &mut r.forecast {
                    finish_forecast(f);
                }
                for f in r.forecast_by_owner.values_mut() {
                    finish_forecast(f);
                }
                r
            })
            .collect()
    }
}

/// An owner's stage rows in a report, made on first use.
fn owner_rows<'r>(
    report: &'r mut PipelineReport,
    pipeline: &Pipeline,
    owner: &str,
) -> &'r mut StageRows {
    report.by_owner.entry(owner.to_owned()).or_insert_with(|| {
        pipeline
            .stages
            .iter()
            .map(|s| (s.name.clone(), StageFigures::default()))
            .collect()
    })
}

/// The pipeline's forecast and the owner's, when the pipeline forecasts.
fn forecasts<'r>(report: &'r mut PipelineReport, owner: &str) -> Vec<&'r mut Forecast> {
    let Some(total) = report.forecast.as_mut() else {
        return Vec::new();
    };
    let mine = report
        .forecast_by_owner
        .entry(owner.to_owned())
        .or_default();
    vec![total, mine]
}

/// Average won value, and velocity from the forecast's own closings (the
/// pipeline's, or one owner's).
fn finish_forecast(f: &mut Forecast) {
    f.average_won_value = (f.won_deals > 0).then(|| f.won_value / f.won_deals as f64);
    let closed = f.closed.won + f.closed.lost;
    let win_rate = (closed > 0).then(|| f.closed.won as f64 / closed as f64);
    let cycle = quantile(&mut f.closed.cycles, 0.5).filter(|d| *d > 0.0);
    f.velocity_per_day = match (f.average_won_value, win_rate, cycle) {
        (Some(average), Some(rate), Some(days)) => {
            Some(f.open_deals as f64 * average * rate / days)
        }
        _ => None,
    };
}

/// The field holding a record's value, when adding its history to a report
/// needs it (its pipeline forecasts, and the record is open now or was
/// won), so a scan reads records only for those.
pub fn value_needed<'w>(
    workflows: &'w Workflows,
    record: &RecordKey,
    visits: &[StageVisit],
) -> Option<&'w str> {
    let pipeline = workflows.pipeline_for(&record.kind)?;
    let field = pipeline.value.as_deref()?;
    let open = visits.last().is_some_and(|v| v.exited_at.is_none());
    let won = visits
        .iter()
        .any(|v| outcome(pipeline, &v.stage) == Some(Outcome::Won));
    (open || won).then_some(field)
}

/// A record's value for the forecast: its field as a number, or a string
/// that reads as one ("48000", "48,000.50"); anything else is no value.
pub fn value_of(record: &crate::state::Record, field: &str) -> Option<f64> {
    match record.fields.get(field)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().replace(',', "").parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

fn outcome(pipeline: &Pipeline, stage: &str) -> Option<Outcome> {
    pipeline
        .stages
        .iter()
        .find(|s| s.name == stage)
        .and_then(|s| s.outcome)
}

fn finish_stage(f: &mut StageFigures) {
    let ratio = |n: u64| (f.entered > 0).then(|| n as f64 / f.entered as f64);
    f.conversion_to_next = ratio(f.advanced);
    f.conversion_to_won = ratio(f.won_later);
    f.median_hours_in_stage = quantile(&mut f.durations, 0.5);
    f.p90_hours_in_stage = quantile(&mut f.durations, 0.9);
    // Ties go to the requirement that sorts first, so the answer is stable.
    f.most_blocking = f
        .refusals
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(requirement, _)| requirement.clone());
}

/// The `q` quantile (nearest rank); `None` for no values.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOWS: &str = "pipelines:\n  - name: b2b\n    for: deal\n    allow_backward: true\n    stages:\n      - { name: qualified }\n      - { name: discovery }\n      - { name: proposal }\n      - { name: won, outcome: won }\n      - { name: lost, outcome: lost }\n";

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::days(d)
    }

    fn visits(owner: &str, path: &[(&str, i64)], last_open: bool) -> Vec<StageVisit> {
        path.iter()
            .enumerate()
            .map(|(i, (stage, at))| StageVisit {
                pipeline: "b2b".into(),
                stage: (*stage).into(),
                entered_at: day(*at),
                exited_at: path
                    .get(i + 1)
                    .map(|(_, next)| day(*next))
                    .or((!last_open).then(|| day(*at))),
                owner: Some(owner.into()),
                ..StageVisit::default()
            })
            .collect()
    }

    #[test]
    fn known_moves_give_exact_figures() {
        let w = crate::config::load_for_tests(FLOWS);
        // D2 skips discovery, comes back to it, and is lost.
        let d2 = visits(
            "ben",
            &[
                ("qualified", 0),
                ("proposal", 1),
                ("discovery", 3),
                ("lost", 4),
            ],
            true,
        );
        let key = |id: &str| RecordKey {
            kind: "deal".into(),
            id: id.into(),
        };
        let mut b = PipelineReportBuilder::new(&w, day(0));
        // D1 goes straight through to won; D3 is still qualified.
        b.add(
            &key("D1"),
            &visits(
                "ana",
                &[
                    ("qualified", 0),
                    ("discovery", 2),
                    ("proposal", 5),
                    ("won", 6),
                ],
                true,
            ),
        );
        b.add(&key("D2"), &d2);
        // D3 is still qualified: it stalled twice and two moves were refused.
        let mut d3 = visits("ana", &[("qualified", 0)], true);
        d3[0].stalls = 2;
        d3[0].refused_moves = 2;
        d3[0].refusals = [("budget is required".to_owned(), 2), ("a".to_owned(), 1)].into();
        b.add(&key("D3"), &d3);
        let r = &b.finish()[0];
        let stage = |name: &str| r.stage(name).unwrap();
        let q = stage("qualified");
        assert_eq!(
            (
                q.entered,
                q.exited,
                q.still_in,
                q.advanced,
                q.moved_back,
                q.won_later
            ),
            (3, 2, 1, 2, 0, 1)
        );
        assert_eq!(q.median_hours_in_stage, Some(24.0));
        assert_eq!(q.p90_hours_in_stage, Some(48.0));
        assert_eq!((q.stalled, q.stall_notices, q.refused_moves), (1, 2, 2));
        assert_eq!(q.most_blocking.as_deref(), Some("budget is required"));
        assert_eq!(r.by_owner["ana"][0].1.refusals["budget is required"], 2);
        let p = stage("proposal");
        assert_eq!((p.entered, p.advanced, p.moved_back), (2, 1, 1));
        let discovery = stage("discovery");
        assert_eq!(discovery.conversion_to_won, Some(0.5));
        assert_eq!((r.won, r.lost, r.win_rate), (1, 1, Some(0.5)));
        assert_eq!(r.median_cycle_days, Some(4.0));
        let ana = &r.by_owner["ana"];
        assert_eq!(ana[0].1.entered, 2);
        assert_eq!(ana[0].1.still_in, 1);
        // A period that starts later leaves the earlier visits out.
        let mut later = PipelineReportBuilder::new(&w, day(3));
        later.add(&key("D2"), &d2);
        let r = &later.finish()[0];
        assert_eq!(r.stages[0].1.entered, 0);
        assert_eq!(r.stages[1].1.entered, 1);
    }

    #[test]
    fn the_forecast_weighs_open_value_and_measures_velocity() {
        let w = crate::config::load_for_tests(
            "pipelines:\n  - name: b2b\n    for: deal\n    value: amount\n    stages:\n      - { name: qualified, probability: 0.1 }\n      - { name: discovery, probability: 0.4 }\n      - { name: proposal, probability: 0.6 }\n      - { name: won, outcome: won }\n      - { name: lost, outcome: lost }\n",
        );
        let key = |id: &str| RecordKey {
            kind: "deal".into(),
            id: id.into(),
        };
        let mut b = PipelineReportBuilder::new(&w, day(0));
        let open_in = |owner, stage| visits(owner, &[("qualified", 0), (stage, 1)], true);
        b.add_valued(&key("D1"), &open_in("ana", "discovery"), Some(10_000.0));
        b.add_valued(&key("D2"), &open_in("ben", "proposal"), Some(20_000.0));
        b.add_valued(
            &key("D3"),
            &visits("ana", &[("qualified", 0), ("won", 6)], true),
            Some(30_000.0),
        );
        b.add_valued(
            &key("D4"),
            &visits("ben", &[("qualified", 0), ("lost", 4)], true),
            None,
        );
        // No value (or one that is not a number) is a deal worth 0.
        b.add_valued(&key("D5"), &open_in("ana", "qualified"), None);
        let r = &b.finish()[0];
        let f = r.forecast.as_ref().unwrap();
        assert_eq!(
            (f.open_deals, f.open_value, f.weighted_value),
            (3, 30_000.0, 16_000.0)
        );
        assert_eq!(
            (f.won_deals, f.won_value, f.average_won_value),
            (1, 30_000.0, Some(30_000.0))
        );
        // 3 open × 30,000 × win rate 0.5 ÷ median cycle 4 days.
        assert_eq!(f.velocity_per_day, Some(11_250.0));
        let ana = &r.forecast_by_owner["ana"];
        assert_eq!(
            (ana.open_deals, ana.weighted_value, ana.won_value),
            (2, 4_000.0, 30_000.0)
        );
        // Ana won her one closing in 6 days: 2 × 30,000 × 1 ÷ 6.
        assert_eq!(ana.velocity_per_day, Some(10_000.0));
        assert_eq!(r.forecast_by_owner["ben"].velocity_per_day, None);
        let proposal = r.stage("proposal").unwrap();
        assert_eq!(
            (
                proposal.open_deals,
                proposal.open_value,
                proposal.weighted_value
            ),
            (Some(1), Some(20_000.0), Some(12_000.0))
        );
        assert_eq!(r.by_owner["ben"][2].1.weighted_value, Some(12_000.0));
        // A pipeline without value: has no forecast, and its JSON no new keys.
        let plain = crate::config::load_for_tests(FLOWS);
        let mut b = PipelineReportBuilder::new(&plain, day(0));
        b.add_valued(&key("D1"), &open_in("ana", "discovery"), Some(1.0));
        let json = serde_json::to_string(&b.finish()).unwrap();
        assert!(
            !json.contains("forecast") && !json.contains("open_value"),
            "{json}"
        );
    }

    #[test]
    fn values_are_numbers_or_strings_that_read_as_numbers() {
        let record = |v: serde_json::Value| crate::state::Record {
            fields: [("amount".to_owned(), v)].into_iter().collect(),
            ..crate::state::Record::new(
                RecordKey {
                    kind: "deal".into(),
                    id: "D".into(),
                },
                day(0),
            )
        };
        assert_eq!(
            value_of(&record(serde_json::json!(48000)), "amount"),
            Some(48_000.0)
        );
        assert_eq!(
            value_of(&record(serde_json::json!("48,000.50")), "amount"),
            Some(48_000.5)
        );
        assert_eq!(value_of(&record(serde_json::json!("lots")), "amount"), None);
        assert_eq!(value_of(&record(serde_json::json!(null)), "amount"), None);
        assert_eq!(value_of(&record(serde_json::json!(1)), "other"), None);
    }
}
