//! Running rules: conditions, then actions in order. A failing action stops
//! its run and raises `action.failed`; other rules are not affected.
//!
//! Above the actions, sequences and scoring: a rule's action may enroll a
//! record or move a score, and a score's thresholds run actions again,
//! through [`run_threshold`], which scoring is handed rather than calls.

use super::actions::{
    ActionResult, Done, Origin, assign, email, emit, handoff, new_run, notify,
    record_named_outcome, set, sms, task, webhook,
};
use super::{MoveResult, Work, context, scoring, sequence};
use crate::config::workflows::{Action, Rule, ScoringModel, Threshold};
use crate::engine::ReadError;
use crate::state::Run;

/// Runs every rule the event triggers, in file order (found through the
/// compiled trigger index, never by scanning all rules).
pub fn run_rules(work: &mut Work) -> Result<(), ReadError> {
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

pub(super) fn run_rule(work: &mut Work, index: usize, rule: &Rule) -> Result<(), ReadError> {
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
        work.effects.runs.push(run);
    }
    Ok(())
}

/// Runs actions in order into `run`, stopping at the first failure.
fn run_actions(work: &mut Work, run: &mut Run, actions: &[Action]) -> Result<(), ReadError> {
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
        Action::Enroll(sequence) => Ok(sequence::enroll(work, sequence)?),
        Action::Unenroll(sequence) => Ok(sequence::unenroll(work, sequence.as_deref())?),
        Action::Score { model, points } => score(work, model, &origin.rule, *points),
        Action::Emit { event_type, data } => emit::emit(work, event_type, data.as_ref()),
        Action::Email(e) => email::email(work, e, origin),
        Action::Notify(n) => notify::notify(work, n, origin),
        Action::Webhook(w) => webhook::webhook(work, w, origin),
        Action::Sms(t) => sms::sms(work, t, origin),
    }
}

/// The `score` action: points on a model outside its rules.
fn score(work: &mut Work, model: &str, rule: &str, points: f64) -> ActionResult {
    Ok(
        match scoring::adjust(work, model, rule, points, run_threshold)? {
            Some((before, after)) => Done::Ok(Some(format!("{model}: {before:.1} → {after:.1}"))),
            None => Done::Skipped(format!("scoring model {model} no longer exists")),
        },
    )
}

/// Runs the actions of a threshold a score rose to or through.
pub(super) fn run_threshold(
    work: &mut Work,
    model: &ScoringModel,
    threshold: &Threshold,
) -> Result<(), ReadError> {
    let mut run = new_run(
        work,
        &format!("score-{}-{}", model.name, threshold.name),
        format!("scoring:{}/{}", model.name, threshold.name),
    );
    run_actions(work, &mut run, &threshold.actions)?;
    work.effects.runs.push(run);
    Ok(())
}
