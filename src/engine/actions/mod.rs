//! Running rules: conditions, then actions in order. A failing action stops
//! its run and raises `action.failed`; other rules are not affected.
//!
//! This file is the runner; each action is a file of its own. An action
//! answers how it ended ([`Done`]) or an [`ActionError`]: its own failure,
//! written into the run, or a store error, which fails the whole event.

mod assign;
mod email;
mod emit;
mod handoff;
mod notify;
mod set;
mod sms;
mod task;
mod webhook;

pub(super) use email::email as email_step;
pub use email::unsubscribe_placeholder;
pub(super) use sms::sms as sms_step;
pub(super) use task::task as task_step;
pub(super) use webhook::webhook as webhook_step;

use super::{MoveResult, Work, context};
use crate::config::expr::TextTemplate;
use crate::config::workflows::{Action, JsonTemplate, Rule};
use crate::state::{ActionOutcome, BuiltinEvent, Delivery, OutboxEntry, Outcome, Run};
use crate::store::StoreError;
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
    Store(StoreError),
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

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        ActionError::Store(e)
    }
}

pub(super) type ActionResult = Result<Done, ActionError>;

/// Runs every rule the event triggers, in file order (found through the
/// compiled trigger index, never by scanning all rules).
pub fn run_rules(work: &mut Work) -> Result<(), StoreError> {
    let kind = work.record.key.kind.clone();
    let rules: Vec<(usize, &Rule)> = work
        .workflows
        .rules_for(&work.event.event_type)
        .filter(|(_, r)| r.kind.as_deref().is_none_or(|k| k == kind))
        .collect();
    for (index, rule) in rules {
        run_rule(work, index, rule)?;
    }
    Ok(())
}

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

pub(super) fn run_rule(work: &mut Work, index: usize, rule: &Rule) -> Result<(), StoreError> {
    let mut run = new_run(work, &format!("{index:04}"), rule.name.clone());
    run.condition = rule.condition.as_ref().map(|c| c.source.clone());
    if let Some(condition) = &rule.condition {
        let scope = work.scope(&[]);
        run.saw = context::values_seen(&condition.source, &scope);
        match work.workflows.expressions.eval(condition, &scope) {
            Ok(matched) => run.matched = matched,
            Err(e) => {
                run.matched = false;
                run.error = Some(format!("condition failed: {e}"));
            }
        }
    }
    if run.matched {
        run_actions(work, &mut run, &rule.actions)?;
    }
    // History keeps runs that fired or failed; a condition that was simply
    // false on every event would otherwise dominate the store.
    if run.matched || run.error.is_some() {
        work.changes.runs.push(run);
    }
    Ok(())
}

/// Runs actions in order into `run`, stopping at the first failure.
pub(super) fn run_actions(
    work: &mut Work,
    run: &mut Run,
    actions: &[Action],
) -> Result<(), StoreError> {
    for (position, action) in actions.iter().enumerate() {
        let origin = Origin {
            id: format!("{}-{position:02}", run.id),
            rule: run.rule.clone(),
            ..Origin::default()
        };
        let result = run_action(work, action, &origin);
        if record_named_outcome(work, run, action_name(action).to_owned(), result)? {
            break;
        }
    }
    Ok(())
}

/// Writes the outcome of an action (or sequence step) named `name` into
/// the run; answers whether it failed, or the store error that stops the
/// event.
pub(super) fn record_named_outcome(
    work: &mut Work,
    run: &mut Run,
    name: String,
    result: ActionResult,
) -> Result<bool, StoreError> {
    let (outcome, detail, failed) = match result {
        Ok(Done::Ok(detail)) => (Outcome::Ok, detail, false),
        Ok(Done::Refused(why)) => (Outcome::Refused, Some(why), false),
        Ok(Done::Skipped(why)) => (Outcome::Skipped, Some(why), false),
        Err(ActionError::Failed(why)) => (Outcome::Failed, Some(why), true),
        Err(ActionError::Store(e)) => return Err(e),
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

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Email(_) => "email",
        Action::Notify(_) => "notify",
        Action::Webhook(_) => "webhook",
        Action::Task(_) => "task",
        Action::Set(_) => "set",
        Action::Move(_) => "move",
        Action::Assign(_) => "assign",
        Action::Handoff(_) => "handoff",
        Action::Enroll(_) => "enroll",
        Action::Unenroll(_) => "unenroll",
        Action::Score { .. } => "score",
        Action::Emit { .. } => "emit",
        Action::Sms(_) => "sms",
    }
}

fn run_action(work: &mut Work, action: &Action, origin: &Origin) -> ActionResult {
    match action {
        Action::Set(fields) => set::set(work, fields),
        Action::Task(t) => task::task(work, t, origin),
        Action::Move(stage) => match work.request_move(stage) {
            MoveResult::Moved { .. } => Ok(Done::Ok(Some(format!("moved to {stage}")))),
            MoveResult::Refused(unmet) => Ok(Done::Refused(unmet.join("; "))),
            MoveResult::NotFound(why) => Err(why.into()),
        },
        Action::Assign(a) => {
            let owner = assign::pick_owner(work, a)?;
            Ok(assign::set_owner(work, owner))
        }
        Action::Handoff(h) => handoff::handoff(work, h, origin),
        Action::Enroll(sequence) => Ok(super::sequence::enroll(work, sequence)),
        Action::Unenroll(sequence) => Ok(super::sequence::unenroll(work, sequence.as_deref())),
        Action::Score { model, points } => {
            Ok(super::scoring::adjust(work, model, &origin.rule, *points)?)
        }
        Action::Emit { event_type, data } => emit::emit(work, event_type, data.as_ref()),
        Action::Email(e) => email::email(work, e, origin),
        Action::Notify(n) => notify::notify(work, n, origin),
        Action::Webhook(w) => webhook::webhook(work, w, origin),
        Action::Sms(t) => sms::sms(work, t, origin),
    }
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
fn render_json(work: &mut Work, template: &JsonTemplate) -> Result<Json, ActionError> {
    let scope = work.scope(&[]);
    template
        .render(&work.workflows.expressions, &scope)
        .map_err(|e| ActionError::Failed(e.to_string()))
}

/// Queues an outbox row for delivery, identified by the action's origin.
fn queue_delivery(work: &mut Work, origin: &Origin, delivery: Delivery) {
    let mut row = OutboxEntry::pending(
        origin.id.clone(),
        work.record.key.clone(),
        delivery,
        work.now,
        origin.rule.clone(),
    );
    row.step = origin.step.clone();
    row.depth = work.event.depth + 1;
    work.changes.outbox.push(row);
}
