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
    #[serde(skip)]
    durations: Vec<f64>,
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
            let per_owner = report.by_owner.entry(owner).or_insert_with(|| {
                pipeline
                    .stages
                    .iter()
                    .map(|s| (s.name.clone(), StageFigures::default()))
                    .collect()
            });
            step(&mut per_owner[here].1);
        }
        let first_outcome = visits
            .iter()
            .find_map(|v| outcome_of(&v.stage).map(|o| (o, v.entered_at)));
        if let (Some((result, at)), Some(first)) = (first_outcome, visits.first())
            && at >= self.since
        {
            match result {
                Outcome::Won => report.won += 1,
                Outcome::Lost => report.lost += 1,
            }
            report
                .cycles
                .push((at - first.entered_at).num_seconds() as f64 / 86_400.0);
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
                r
            })
            .collect()
    }
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
}
