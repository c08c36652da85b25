//! Reports (SPEC §4 `dealflow report`, §5 `/v1/reports/pipeline`): what
//! the stored history says about the process. Each report is computed from
//! the store in one pass and rendered as JSON, a terminal table or CSV.
//!
//! Owns: reading history into figures, and the daily forecast snapshot
//! (`forecast`, its one write). Never: writes anything else to the store.

pub mod forecast;
pub mod pipeline;
mod render;

pub use pipeline::{Forecast, PipelineReport, PipelineReportBuilder, quantile, value_of};
pub use render::{Format, render_forecast, render_owners, render_pipeline, render_sequences};

use crate::config::Workflows;
use crate::state::{EnrollmentStatus, OutboxStatus, RecordKey, StageVisit, TaskStatus};
use crate::store::{OutboxFilter, Store, StoreError, TaskFilter, for_each_item};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Rows read per page while scanning.
const PAGE: usize = 1_000;

/// The pipeline report of every pipeline, for visits entered since `since`.
pub fn pipeline_report<S: Store>(
    store: &S,
    workflows: &Workflows,
    since: DateTime<Utc>,
) -> Result<Vec<PipelineReport>, StoreError> {
    let mut builder = PipelineReportBuilder::new(workflows, since);
    each_valued_history(store, workflows, &mut |record, visits, value| {
        builder.add_valued(&record, &visits, value);
    })?;
    Ok(builder.finish())
}

/// Every record's stage history, with the record's value when a forecast
/// needs it ([`pipeline::value_needed`]): the one scan behind the pipeline
/// report, the console's figures and the forecast report.
pub fn each_valued_history<S: Store>(
    store: &S,
    workflows: &Workflows,
    each: &mut dyn FnMut(RecordKey, Vec<StageVisit>, Option<f64>),
) -> Result<(), StoreError> {
    let mut failed = Ok(());
    store.each_stage_history(&mut |record, visits| {
        if failed.is_err() {
            return;
        }
        let value = match pipeline::value_needed(workflows, &record, &visits) {
            Some(field) => match store.record(&record) {
                Ok(found) => found.and_then(|r| value_of(&r, field)),
                Err(e) => {
                    failed = Err(e);
                    return;
                }
            },
            None => None,
        };
        each(record, visits, value);
    })?;
    failed
}

/// One person's queue and book.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnerFigures {
    /// Open tasks.
    pub open_tasks: u64,
    /// Open tasks past their due time.
    pub overdue_tasks: u64,
    /// Records they own, by pipeline stage.
    pub records_by_stage: BTreeMap<String, u64>,
    /// Handoff tasks they received since the period's start.
    pub handoffs_received: u64,
    /// Of those, still open.
    pub handoffs_open: u64,
    /// Median hours from a handoff to its task's completion (completed
    /// handoff tasks only; open ones are counted in `handoffs_open`).
    pub median_handoff_response_hours: Option<f64>,
    #[serde(skip)]
    handoff_responses: Vec<f64>,
}

/// The owners report: open and overdue tasks, records per stage, and how
/// fast handoffs since `since` were picked up, per owner (`""` is
/// unassigned).
pub fn owners_report<S: Store>(
    store: &S,
    workflows: &Workflows,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, OwnerFigures>, StoreError> {
    let mut owners: BTreeMap<String, OwnerFigures> = BTreeMap::new();
    for_each_item(
        |after| store.tasks(&TaskFilter::default(), after, PAGE),
        |task| {
            let open = task.status == TaskStatus::Open;
            let handoff = task.from_handoff && task.created_at >= since;
            if !open && !handoff {
                return;
            }
            let o = owners
                .entry(task.owner.clone().unwrap_or_default())
                .or_default();
            if open {
                o.open_tasks += 1;
                if task.due_at.is_some_and(|d| d < now) {
                    o.overdue_tasks += 1;
                }
            }
            if handoff {
                o.handoffs_received += 1;
                match task.completed_at {
                    Some(done) if !open => o
                        .handoff_responses
                        .push((done - task.created_at).num_seconds() as f64 / 3600.0),
                    _ => o.handoffs_open += 1,
                }
            }
        },
    )?;
    for kind in workflows.pipelines.keys() {
        for_each_item(
            |after| store.records_of_kind(kind, after, PAGE),
            |record| {
                if let Some(stage) = &record.stage {
                    let o = owners
                        .entry(record.owner.clone().unwrap_or_default())
                        .or_default();
                    *o.records_by_stage
                        .entry(format!("{kind}/{stage}"))
                        .or_default() += 1;
                }
            },
        )?;
    }
    for o in owners.values_mut() {
        o.median_handoff_response_hours = quantile(&mut o.handoff_responses, 0.5);
    }
    Ok(owners)
}

/// One sequence's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SequenceFigures {
    /// Enrollments (active, exited, completed).
    pub enrolled: u64,
    /// Still running.
    pub active: u64,
    /// Ran to the end.
    pub completed: u64,
    /// Exited, by reason (`email.replied`, `email.unsubscribed`,
    /// `email.bounced`, `meeting.booked`, `unenrolled`, an `exit:` reason...).
    pub exited: BTreeMap<String, u64>,
    /// Per step id.
    pub steps: BTreeMap<String, StepFigures>,
    /// `exited["email.replied"] / enrolled`.
    pub reply_rate: Option<f64>,
}

/// One sequence step's outcomes. Sends are its outbox rows by status; an
/// exit is credited to the last step that ran before it (a reply to the
/// third email counts at the third step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    /// Delivered (emails, tasks' notices and webhooks alike).
    pub sent: u64,
    /// Queued or being retried.
    pub waiting: u64,
    /// Stopped before sending (the prospect replied first, say).
    pub cancelled: u64,
    /// Given up on.
    pub dead: u64,
    /// Exits by `email.replied` after this step.
    pub replied: u64,
    /// Exits by `email.bounced` after this step.
    pub bounced: u64,
    /// Exits by `email.unsubscribed` after this step.
    pub unsubscribed: u64,
    /// Exits by `meeting.booked` after this step.
    pub meeting_booked: u64,
    /// Other exits after this step, by reason.
    pub other_exits: BTreeMap<String, u64>,
    /// `replied / sent`.
    pub reply_rate: Option<f64>,
}

impl StepFigures {
    /// The counts by name, in a fixed order; exits only when any.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let fixed = [
            ("sent", self.sent),
            ("waiting", self.waiting),
            ("cancelled", self.cancelled),
            ("dead", self.dead),
            ("replied", self.replied),
            ("bounced", self.bounced),
            ("unsubscribed", self.unsubscribed),
            ("meeting_booked", self.meeting_booked),
        ];
        let other = self
            .other_exits
            .iter()
            .map(|(r, n)| (format!("exited:{r}"), *n));
        fixed
            .into_iter()
            .map(|(name, n)| (name.to_owned(), n))
            .chain(other)
            .collect()
    }

    fn count_exit(&mut self, reason: &str) {
        match reason {
            "email.replied" => self.replied += 1,
            "email.bounced" => self.bounced += 1,
            "email.unsubscribed" => self.unsubscribed += 1,
            "meeting.booked" => self.meeting_booked += 1,
            other => *self.other_exits.entry(other.to_owned()).or_default() += 1,
        }
    }
}

/// The sequences report, from enrollments and the outbox.
pub fn sequences_report<S: Store>(
    store: &S,
) -> Result<BTreeMap<String, SequenceFigures>, StoreError> {
    let mut out: BTreeMap<String, SequenceFigures> = BTreeMap::new();
    for_each_item(
        |after| store.all_enrollments(after, PAGE),
        |e| {
            let f = out.entry(e.sequence.clone()).or_default();
            f.enrolled += 1;
            match e.status {
                EnrollmentStatus::Active => f.active += 1,
                EnrollmentStatus::Completed => f.completed += 1,
                EnrollmentStatus::Exited => {
                    let reason = e.exit_reason.clone().unwrap_or_default();
                    if let Some(step) = &e.last_step {
                        f.steps.entry(step.clone()).or_default().count_exit(&reason);
                    }
                    *f.exited.entry(reason).or_default() += 1;
                }
            }
        },
    )?;
    for_each_item(
        |after| store.outbox_matching(&OutboxFilter::default(), after, PAGE),
        |row| {
            let (Some(sequence), Some(step)) =
                (row.created_by.strip_prefix("sequence:"), &row.step)
            else {
                return;
            };
            let f = out.entry(sequence.to_owned()).or_default();
            let step = f.steps.entry(step.clone()).or_default();
            match row.status {
                OutboxStatus::Sent => step.sent += 1,
                OutboxStatus::Dead => step.dead += 1,
                OutboxStatus::Cancelled => step.cancelled += 1,
                _ => step.waiting += 1,
            }
        },
    )?;
    for f in out.values_mut() {
        let replied = f.exited.get("email.replied").copied().unwrap_or(0);
        f.reply_rate = (f.enrolled > 0).then(|| replied as f64 / f.enrolled as f64);
        for step in f.steps.values_mut() {
            step.reply_rate = (step.sent > 0).then(|| step.replied as f64 / step.sent as f64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
