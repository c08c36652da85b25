//! Actions: one file each, and what they share: where an action comes
//! from ([`Origin`]), how it ended ([`Done`] or an [`ActionError`]: its own
//! failure, written into the run, or a store error, which fails the whole
//! event), and writing that outcome into a run.
//!
//! Rules (`engine::rules`) and sequence steps (`engine::sequence`) both run
//! these; neither is known here, so an action cannot reach back into them.

pub(super) mod assign;
pub(super) mod email;
pub(super) mod emit;
pub(super) mod handoff;
pub(super) mod notify;
pub(super) mod set;
pub(super) mod sms;
pub(super) mod task;
pub(super) mod webhook;

pub use email::unsubscribe_placeholder;

use super::Work;
use crate::config::expr::TextTemplate;
use crate::config::workflows::JsonTemplate;
use crate::engine::ReadError;
use crate::state::{ActionOutcome, BuiltinEvent, Delivery, OutboxEntry, Outcome, Run};
use serde_json::{Value as Json, json};

/// Where an action comes from: its stable id (outbox row, task), the rule
/// or sequence that ran it, and for sequence steps the step and the
/// delivery context the sequence decided.
#[derive(Debug, Clone, Default)]
pub(super) struct Origin {
    pub id: String,
    pub rule: String,
    pub step: Option<String>,
    /// Outbox id of the message to follow up in the same thread.
    pub thread: Option<String>,
    /// Zone the send was timed in.
    pub zone: Option<String>,
}

/// How one action ended, before it is written down.
pub(super) enum Done {
    Ok(Option<String>),
    Refused(String),
    Skipped(String),
}

/// Why an action did not do its work.
#[derive(Debug)]
pub(super) enum ActionError {
    /// The action failed: a sentence for run history and `action.failed`.
    Failed(String),
    /// Reading state failed: the event is not handled (retried, or set
    /// aside by the worker).
    Read(ReadError),
}

impl From<String> for ActionError {
    fn from(why: String) -> Self {
        ActionError::Failed(why)
    }
}

impl From<&str> for ActionError {
    fn from(why: &str) -> Self {
        ActionError::Failed(why.to_owned())
    }
}

impl From<ReadError> for ActionError {
    fn from(e: ReadError) -> Self {
        ActionError::Read(e)
    }
}

pub(super) type ActionResult = Result<Done, ActionError>;

/// A run of `rule` on the work's event, matched until its condition says
/// otherwise; `suffix` makes its id unique within the event.
pub(super) fn new_run(work: &Work, suffix: &str, rule: String) -> Run {
    Run {
        id: format!("{:016}-{suffix}", work.event.seq),
        rule,
        event_id: work.event.id.clone(),
        event_type: work.event.event_type.clone(),
        record: work.record.key.clone(),
        version: work.workflows.version.clone(),
        condition: None,
        matched: true,
        saw: Default::default(),
        actions: Vec::new(),
        at: work.now,
        error: None,
    }
}

/// Writes the outcome of an action (or sequence step) named `name` into
/// the run; answers whether it failed, or the store error that stops the
/// event.
pub(super) fn record_named_outcome(
    work: &mut Work,
    run: &mut Run,
    name: String,
    result: ActionResult,
) -> Result<bool, ReadError> {
    let (outcome, detail, failed) = match result {
        Ok(Done::Ok(detail)) => (Outcome::Ok, detail, false),
        Ok(Done::Refused(why)) => (Outcome::Refused, Some(why), false),
        Ok(Done::Skipped(why)) => (Outcome::Skipped, Some(why), false),
        Err(ActionError::Failed(why)) => (Outcome::Failed, Some(why), true),
        Err(ActionError::Read(e)) => return Err(e),
    };
    if failed {
        let reason = work
            .workflows
            .secrets
            .redact(detail.as_deref().unwrap_or(""));
        work.raise(
            BuiltinEvent::ActionFailed,
            json!({ "rule": run.rule, "action": name, "reason": reason }),
        );
    }
    run.actions.push(ActionOutcome {
        action: name,
        outcome,
        detail: detail.map(|d| work.workflows.secrets.redact(&d)),
    });
    Ok(failed)
}

/// Renders a text template against the record as it is now.
pub(super) fn render(
    work: &mut Work,
    template: &TextTemplate,
    extra: &[(&str, Json)],
) -> Result<String, ActionError> {
    let scope = work.scope(extra);
    work.workflows
        .expressions
        .render(template, &scope)
        .map_err(|e| ActionError::Failed(e.to_string()))
}

/// Renders the strings of a JSON template in place.
pub(super) fn render_json(work: &mut Work, template: &JsonTemplate) -> Result<Json, ActionError> {
    let scope = work.scope(&[]);
    template
        .render(&work.workflows.expressions, &scope)
        .map_err(|e| ActionError::Failed(e.to_string()))
}

/// Queues an outbox row for delivery, identified by the action's origin.
pub(super) fn queue_delivery(work: &mut Work, origin: &Origin, delivery: Delivery) {
    let mut row = OutboxEntry::pending(
        origin.id.clone(),
        work.record.key.clone(),
        delivery,
        work.now,
        origin.rule.clone(),
    );
    row.step = origin.step.clone();
    row.depth = work.event.depth + 1;
    work.effects.outbox.push(row);
}
