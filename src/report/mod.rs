//! Reports (SPEC §4 `dealflow report`, §5 `/v1/reports/pipeline`): what
//! the stored history says about the process. Each report is computed from
//! the store in one pass and rendered as JSON, a terminal table or CSV.

pub mod pipeline;
mod render;

pub use pipeline::{PipelineReport, PipelineReportBuilder};
pub use render::{Format, render_owners, render_pipeline, render_sequences};

use crate::config::Workflows;
use crate::state::{OutboxStatus, TaskStatus};
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
    store.each_stage_history(&mut |record, visits| builder.add(&record, &visits))?;
    Ok(builder.finish())
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
}

/// The owners report: open and overdue tasks, records per stage, per owner
/// (`""` is unassigned).
pub fn owners_report<S: Store>(
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, OwnerFigures>, StoreError> {
    let mut owners: BTreeMap<String, OwnerFigures> = BTreeMap::new();
    let open = TaskFilter {
        status: Some(TaskStatus::Open),
        ..TaskFilter::default()
    };
    for_each_item(
        |after| store.tasks(&open, after, PAGE),
        |task| {
            let o = owners
                .entry(task.owner.clone().unwrap_or_default())
                .or_default();
            o.open_tasks += 1;
            if task.due_at.is_some_and(|d| d < now) {
                o.overdue_tasks += 1;
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
    /// Per step: emails sent, and outbox rows by status.
    pub steps: BTreeMap<String, BTreeMap<String, u64>>,
    /// `exited["email.replied"] / enrolled`.
    pub reply_rate: Option<f64>,
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
            match e.status.as_str() {
                "active" => f.active += 1,
                "completed" => f.completed += 1,
                _ => {
                    *f.exited
                        .entry(e.exit_reason.clone().unwrap_or_default())
                        .or_default() += 1
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
            let status = match row.status {
                OutboxStatus::Sent => "sent",
                OutboxStatus::Dead => "dead",
                OutboxStatus::Cancelled => "cancelled",
                _ => "waiting",
            };
            let f = out.entry(sequence.to_owned()).or_default();
            *f.steps
                .entry(step.clone())
                .or_default()
                .entry(status.to_owned())
                .or_default() += 1;
        },
    )?;
    for f in out.values_mut() {
        let replied = f.exited.get("email.replied").copied().unwrap_or(0);
        f.reply_rate = (f.enrolled > 0).then(|| replied as f64 / f.enrolled as f64);
    }
    Ok(out)
}
