//! Scoring (SPEC §3.7): points from events and attributes, kept per rule on
//! the record so every score is the sum of named parts, and thresholds that
//! fire when the score rises to or through them.
//!
//! Not yet here (issue 6): decay by half-life and the time-stamped ledger.

use super::Work;
use super::actions::{self, Done};
use crate::config::workflows::{ScoreTrigger, ScoringModel};
use crate::store::StoreError;
use serde_json::json;

/// Applies every scoring rule of the record's kind to the current event
/// and record, then runs the thresholds crossed.
pub(super) fn apply(work: &mut Work) -> Result<(), StoreError> {
    let workflows = work.workflows;
    let kind = work.record.key.kind.clone();
    for model in workflows.scoring.iter().filter(|m| m.kind == kind) {
        let before = score_of(work, &model.name);
        for rule in &model.rules {
            let scope = work.scope(&[]);
            match &rule.trigger {
                ScoreTrigger::Event(on, condition) => {
                    let fires = *on == work.event.event_type
                        && condition
                            .as_ref()
                            .is_none_or(|c| workflows.expressions.eval(c, &scope).unwrap_or(false));
                    if fires {
                        add_part(work, &model.name, &rule.name, rule.points, rule.max);
                    }
                }
                ScoreTrigger::Attribute(condition) => {
                    let holds = workflows
                        .expressions
                        .eval(condition, &scope)
                        .unwrap_or(false);
                    let target = if holds { rule.points } else { 0.0 };
                    set_part(work, &model.name, &rule.name, target);
                }
            }
        }
        settle(work, model, before)?;
    }
    Ok(())
}

/// The `score` action: points on a model outside its rules.
pub(super) fn adjust(
    work: &mut Work,
    model_name: &str,
    rule: &str,
    points: f64,
) -> Result<Done, StoreError> {
    let workflows = work.workflows;
    let Some(model) = workflows.scoring.iter().find(|m| m.name == model_name) else {
        return Ok(Done::Skipped(format!(
            "scoring model {model_name} no longer exists"
        )));
    };
    let before = score_of(work, model_name);
    add_part(work, model_name, &format!("action {rule}"), points, None);
    let after = settle(work, model, before)?;
    Ok(Done::Ok(Some(format!("{model_name}: {before} → {after}"))))
}

fn score_of(work: &Work, model: &str) -> f64 {
    work.record.scores.get(model).copied().unwrap_or(0.0)
}

fn add_part(work: &mut Work, model: &str, rule: &str, points: f64, max: Option<f64>) {
    let current = part(work, model, rule);
    let mut next = current + points;
    if let Some(max) = max {
        next = next.clamp(-max, max);
    }
    set_part(work, model, rule, next);
}

fn part(work: &Work, model: &str, rule: &str) -> f64 {
    work.record
        .score_parts
        .get(model)
        .and_then(|p| p.get(rule))
        .copied()
        .unwrap_or(0.0)
}

fn set_part(work: &mut Work, model: &str, rule: &str, value: f64) {
    if part(work, model, rule) == value || !value.is_finite() {
        return;
    }
    let parts = work.record.score_parts.entry(model.to_owned()).or_default();
    if value == 0.0 {
        parts.remove(rule);
    } else {
        parts.insert(rule.to_owned(), value);
    }
    work.touch();
}

/// Recomputes the model's score from its parts; raises `score.changed` and
/// runs each threshold crossed upward. Answers the new score.
fn settle(work: &mut Work, model: &ScoringModel, before: f64) -> Result<f64, StoreError> {
    let after: f64 = work
        .record
        .score_parts
        .get(&model.name)
        .map(|p| p.values().sum())
        .unwrap_or(0.0);
    if after == before || !after.is_finite() {
        return Ok(before);
    }
    work.record.scores.insert(model.name.clone(), after);
    work.touch();
    work.raise(
        "score.changed",
        json!({ "model": model.name, "from": before, "to": after }),
    );
    // Falling below re-arms a threshold by itself: the next rise crosses again.
    for threshold in model
        .thresholds
        .iter()
        .filter(|t| before < t.at && after >= t.at)
    {
        work.raise(
            "score.crossed",
            json!({ "model": model.name, "threshold": threshold.name, "at": threshold.at, "score": after }),
        );
        let mut run = actions::new_run(
            work,
            &format!("score-{}-{}", model.name, threshold.name),
            format!("scoring:{}/{}", model.name, threshold.name),
        );
        actions::run_actions(work, &mut run, &threshold.actions)?;
        work.changes.runs.push(run);
    }
    Ok(after)
}
