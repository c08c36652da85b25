//! Scoring (SPEC §3.7): points from events and attributes, kept per rule on
//! the record so every score is the sum of named parts, decayed by the
//! model's half-life, with every contribution in the score ledger, and
//! thresholds that fire when the score rises to or through them.
//!
//! Decay is exponential, so it needs no replay: each event first decays the
//! stored parts from `scores_as_of` to now (`part × 2^(−Δt / half_life)`),
//! then adds its points. Attribute points (who the lead is) do not decay;
//! event points (what the lead did) do. A threshold fires when the score
//! before this event's points (decayed to now) is below `at` and the score
//! after is at or above it, so falling below, by decay or by negative
//! points, is exactly what re-arms it.

use super::Work;
use super::actions::{self, Done};
use crate::config::workflows::{ScoreTrigger, ScoringModel};
use crate::state::{Record, ScoreEntry};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde_json::json;

/// One rule's effect on this event.
enum Effect<'m> {
    /// Add points (an event rule), within `max`.
    Add(&'m str, f64, Option<f64>),
    /// Hold the part at this value (an attribute rule: its points or 0).
    Hold(&'m str, f64),
}

/// Applies every scoring model of the record's kind to the current event
/// and record, then runs the thresholds crossed.
pub(super) fn apply(work: &mut Work) -> Result<(), StoreError> {
    let workflows = work.workflows;
    let kind = work.record.key.kind.clone();
    let models: Vec<&ScoringModel> = workflows
        .scoring
        .iter()
        .filter(|m| m.kind == kind)
        .collect();
    if models.is_empty() {
        return Ok(());
    }
    // Every rule sees the record as the event left it: one scope for all,
    // built only if a condition needs it.
    let mut scope = None;
    let mut holds = |work: &mut Work, c: &crate::config::expr::Condition| {
        let scope = scope.get_or_insert_with(|| work.scope(&[]));
        workflows.expressions.eval(c, scope).unwrap_or(false)
    };
    let mut effects = Vec::new();
    for model in &models {
        let mut mine = Vec::new();
        for rule in &model.rules {
            match &rule.trigger {
                ScoreTrigger::Event(on, condition) if *on == work.event.event_type => {
                    if condition.as_ref().is_none_or(|c| holds(work, c)) {
                        mine.push(Effect::Add(&rule.name, rule.points, rule.max));
                    }
                }
                ScoreTrigger::Event(..) => {}
                ScoreTrigger::Attribute(condition) if may_have_changed(work, &condition.source) => {
                    let points = if holds(work, condition) {
                        rule.points
                    } else {
                        0.0
                    };
                    mine.push(Effect::Hold(&rule.name, points));
                }
                ScoreTrigger::Attribute(_) => {}
            }
        }
        effects.push((*model, mine));
    }
    for (model, mine) in effects {
        let before = decay_to_now(work, model);
        for effect in mine {
            match effect {
                Effect::Add(rule, points, max) => add_part(work, &model.name, rule, points, max),
                Effect::Hold(rule, value) => {
                    let change = value - part(&work.record, &model.name, rule);
                    if change != 0.0 {
                        set_part(work, &model.name, rule, value);
                        note(work, &model.name, rule, change);
                    }
                }
            }
        }
        settle(work, model, before)?;
    }
    Ok(())
}

/// Whether an attribute condition could read differently than at the last
/// event: it reads only user fields, so it needs evaluating when the record
/// is new or one of those fields changed (most events, a page view or an
/// email open, change none). Anything else it reads (kept fields, the
/// event, the owner, `now`) makes it evaluate every time.
fn may_have_changed(work: &Work, source: &str) -> bool {
    if work.created {
        return true;
    }
    let kind = work.record.key.kind.as_str();
    match fields_read(source, kind) {
        Some(fields) => fields
            .iter()
            .any(|f| work.changed_fields.iter().any(|c| c == f)),
        None => true,
    }
}

/// The user fields an expression reads (`record.X` or `KIND.X`), or `None`
/// when it reads anything else in scope.
fn fields_read<'s>(source: &'s str, kind: &str) -> Option<Vec<&'s str>> {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut fields = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b if ident(b) && (i == 0 || bytes[i - 1] != b'.') => {
                let start = i;
                while i < bytes.len() && ident(bytes[i]) {
                    i += 1;
                }
                let word = &source[start..i];
                let is_root = matches!(word, "record" | "event" | "owner" | "now") || word == kind;
                if !is_root {
                    continue;
                }
                let field_start = i + 1;
                let mut end = field_start;
                while end < bytes.len() && ident(bytes[end]) {
                    end += 1;
                }
                let field = source
                    .get(field_start..end)
                    .filter(|_| bytes.get(i) == Some(&b'.'));
                match field {
                    Some(f) if word == "record" || word == kind => {
                        if crate::config::compile::KEPT_FIELDS.contains(&f) || f == "owner" {
                            return None;
                        }
                        fields.push(f);
                    }
                    _ => return None,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    Some(fields)
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
    let before = decay_to_now(work, model);
    add_part(work, model_name, &format!("action {rule}"), points, None);
    let after = settle(work, model, before)?;
    Ok(Done::Ok(Some(format!(
        "{model_name}: {before:.1} → {after:.1}"
    ))))
}

/// The factor a part decays by between two times.
pub fn decay_factor(model: &ScoringModel, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    match model.half_life {
        Some(h) if to > from => {
            let elapsed = (to - from).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            0.5f64.powf(elapsed / h.as_secs_f64())
        }
        _ => 1.0,
    }
}

/// Whether a part is an attribute rule's (those do not decay).
fn is_attribute(model: &ScoringModel, rule: &str) -> bool {
    model
        .rules
        .iter()
        .any(|r| matches!(r.trigger, ScoreTrigger::Attribute(_)) && r.name == rule)
}

/// A model's parts decayed to `at`, by rule, without changing the record.
pub fn parts_at(record: &Record, model: &ScoringModel, at: DateTime<Utc>) -> Vec<(String, f64)> {
    let factor = record
        .scores_as_of
        .get(&model.name)
        .map_or(1.0, |from| decay_factor(model, *from, at));
    record
        .score_parts
        .get(&model.name)
        .into_iter()
        .flatten()
        .map(|(rule, value)| {
            let kept = if is_attribute(model, rule) {
                *value
            } else {
                value * factor
            };
            (rule.clone(), kept)
        })
        .collect()
}

/// Decays the model's stored parts to now; answers the score at now.
fn decay_to_now(work: &mut Work, model: &ScoringModel) -> f64 {
    let now = work.now;
    if model.half_life.is_some() {
        let factor = work
            .record
            .scores_as_of
            .get(&model.name)
            .map_or(1.0, |from| decay_factor(model, *from, now));
        if factor != 1.0
            && let Some(parts) = work.record.score_parts.get_mut(&model.name)
        {
            for (rule, value) in parts.iter_mut() {
                if !is_attribute(model, rule) {
                    *value *= factor;
                }
            }
        }
        if let Some(as_of) = work.record.scores_as_of.get_mut(&model.name) {
            *as_of = now;
        }
    }
    sum(&work.record, &model.name)
}

fn sum(record: &Record, model: &str) -> f64 {
    record
        .score_parts
        .get(model)
        .map(|p| p.values().sum())
        .unwrap_or(0.0)
}

fn add_part(work: &mut Work, model: &str, rule: &str, points: f64, max: Option<f64>) {
    let current = part(&work.record, model, rule);
    let mut next = current + points;
    if let Some(max) = max {
        next = next.clamp(-max, max);
    }
    if next != current && next.is_finite() {
        set_part(work, model, rule, next);
        note(work, model, rule, next - current);
    }
}

fn part(record: &Record, model: &str, rule: &str) -> f64 {
    record
        .score_parts
        .get(model)
        .and_then(|p| p.get(rule))
        .copied()
        .unwrap_or(0.0)
}

fn set_part(work: &mut Work, model: &str, rule: &str, value: f64) {
    let parts = work.record.score_parts.entry(model.to_owned()).or_default();
    if value == 0.0 {
        parts.remove(rule);
    } else {
        parts.insert(rule.to_owned(), value);
    }
    work.record
        .scores_as_of
        .entry(model.to_owned())
        .or_insert(work.now);
    work.touch();
}

/// Writes a contribution to the ledger.
fn note(work: &mut Work, model: &str, rule: &str, points: f64) {
    let position = work.changes.ledger.len() as u32;
    work.changes.ledger.push(ScoreEntry {
        record: work.record.key.clone(),
        model: model.to_owned(),
        rule: rule.to_owned(),
        points,
        at: work.now,
        event_id: work.event.id.clone(),
        seq: (work.event.seq, position),
    });
}

/// Stores the model's score; raises `score.changed` and runs each threshold
/// crossed upward. Answers the new score.
fn settle(work: &mut Work, model: &ScoringModel, before: f64) -> Result<f64, StoreError> {
    let after = sum(&work.record, &model.name);
    if !after.is_finite() {
        return Ok(before);
    }
    let stored = work.record.scores.get(&model.name).copied();
    if stored != Some(after) {
        work.record.scores.insert(model.name.clone(), after);
        work.touch();
    }
    if (after - before).abs() < 1e-9 {
        return Ok(after);
    }
    work.raise(
        "score.changed",
        json!({ "model": model.name, "from": round1(before), "to": round1(after) }),
    );
    for threshold in model
        .thresholds
        .iter()
        .filter(|t| before < t.at && after >= t.at)
    {
        work.raise(
            "score.crossed",
            json!({ "model": model.name, "threshold": threshold.name, "at": threshold.at, "score": round1(after) }),
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

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workflows::{ScoreRule, ScoringModel};
    use crate::state::RecordKey;
    use std::time::Duration;

    fn model(half_life_days: Option<u64>) -> ScoringModel {
        ScoringModel {
            name: "m".into(),
            kind: "lead".into(),
            rules: vec![ScoreRule {
                name: "visit".into(),
                trigger: ScoreTrigger::Event("page.viewed".into(), None),
                points: 10.0,
                max: None,
            }],
            half_life: half_life_days.map(|d| Duration::from_secs(d * 86_400)),
            thresholds: vec![],
        }
    }

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::days(days)
    }

    #[test]
    fn points_halve_every_half_life_and_attributes_do_not_decay() {
        let mut m = model(Some(30));
        m.rules.push(ScoreRule {
            name: "title".into(),
            trigger: ScoreTrigger::Event("never".into(), None),
            points: 20.0,
            max: None,
        });
        let mut r = Record::new(
            RecordKey {
                kind: "lead".into(),
                id: "L".into(),
            },
            t(0),
        );
        r.score_parts.insert(
            "m".into(),
            [("visit".into(), 40.0), ("title".into(), 20.0)].into(),
        );
        r.scores_as_of.insert("m".into(), t(0));
        let at = |m: &ScoringModel, d| {
            parts_at(&r, m, t(d))
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(at(&m, 0)["visit"], 40.0);
        assert!((at(&m, 30)["visit"] - 20.0).abs() < 1e-9);
        assert!((at(&m, 60)["visit"] - 10.0).abs() < 1e-9);
        assert!(
            (at(&m, 60)["title"] - 5.0).abs() < 1e-9,
            "an event rule's part decays"
        );
        m.rules[1].trigger =
            ScoreTrigger::Attribute(crate::config::expr::Condition::for_tests("true"));
        assert_eq!(
            at(&m, 60)["title"],
            20.0,
            "an attribute rule's part does not"
        );
    }

    #[test]
    fn attribute_conditions_know_the_fields_they_read() {
        assert_eq!(
            fields_read(
                "lead.title is defined and ('VP' in lead.title or record.seniority == \"x.y\")",
                "lead"
            ),
            Some(vec!["title", "title", "seniority"])
        );
        assert_eq!(
            fields_read("lead.stage == 'mql'", "lead"),
            None,
            "kept fields change by themselves"
        );
        assert_eq!(fields_read("event.path == '/pricing'", "lead"), None);
        assert_eq!(fields_read("now > lead.trial_ends", "lead"), None);
        assert_eq!(fields_read("'lead.x' == 'now'", "lead"), Some(vec![]));
    }

    #[test]
    fn no_half_life_means_no_decay() {
        let m = model(None);
        assert_eq!(decay_factor(&m, t(0), t(3650)), 1.0);
        assert_eq!(
            decay_factor(&model(Some(1)), t(5), t(4)),
            1.0,
            "time never runs backwards"
        );
    }
}
