//! Scoring (SPEC §3.7): points from events and attributes, kept per rule on
//! the record so every score is the sum of named parts, decayed by the
//! model's half-life, with every contribution in the score ledger, and
//! thresholds that fire when the score rises to or through them.
//!
//! Decay is exponential, so it needs no replay: each event first decays the
//! stored parts from the standing's `as_of` to now (`part × 2^(−Δt / half_life)`),
//! then adds its points. Attribute points (who the lead is) do not decay;
//! event points (what the lead did) do. A threshold fires when the score
//! before this event's points (decayed to now) is below `at` and the score
//! after is at or above it, so falling below, by decay or by negative
//! points, is exactly what re-arms it.

use super::Work;
use crate::config::workflows::{ScoreTrigger, ScoringModel, Threshold};
use crate::engine::ReadError;
use crate::state::BuiltinEvent;
use crate::state::{Event, Record, RecordKey, ScoreNote, ScoreNotes};
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde_json::json;

/// One rule's effect on this event, on the rule's part.
struct Effect<'m> {
    /// The rule's name in the ledger.
    rule: &'m str,
    /// The part's slot in the model; `None` for a part outside its rules.
    slot: Option<usize>,
    change: Change,
}

enum Change {
    /// Add points (an event rule), within `max`.
    Add(f64, Option<f64>),
    /// Hold the part at this value (an attribute rule: its points or 0).
    Hold(f64),
}

impl Change {
    /// The part's value after this change, given its value before.
    fn after(&self, was: f64) -> f64 {
        match *self {
            Change::Add(points, max) => {
                max.map_or(was + points, |max| (was + points).clamp(-max, max))
            }
            Change::Hold(value) => value,
        }
    }
}

/// Runs a threshold's actions: handed in by the rule runner, which sits
/// above scoring (a threshold's action may move a score again).
pub(super) type RunThreshold = fn(&mut Work, &ScoringModel, &Threshold) -> Result<(), ReadError>;

/// Applies every scoring model of the record's kind to the current event
/// and record, then runs the thresholds crossed.
pub(super) fn apply(work: &mut Work, run_threshold: RunThreshold) -> Result<(), ReadError> {
    let workflows = work.workflows;
    let models: Vec<&ScoringModel> = workflows
        .scoring
        .iter()
        .filter(|m| m.kind == work.record.key.kind)
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
    // Every model's effects in one list (at most one per rule); model i's
    // end at `ends[i]`.
    let mut effects = Vec::with_capacity(models.iter().map(|m| m.rules.len()).sum());
    let mut ends = Vec::with_capacity(models.len());
    for model in &models {
        for (rule, slot, reads) in model.rules_for(&work.event.event_type) {
            let change = match &rule.trigger {
                ScoreTrigger::Event(_, condition) => {
                    if !condition.as_ref().is_none_or(|c| holds(work, c)) {
                        continue;
                    }
                    Change::Add(rule.points, rule.max)
                }
                ScoreTrigger::Attribute(condition) if may_have_changed(work, reads) => {
                    Change::Hold(if holds(work, condition) {
                        rule.points
                    } else {
                        0.0
                    })
                }
                ScoreTrigger::Attribute(_) => continue,
            };
            effects.push(Effect {
                rule: &rule.name,
                slot: Some(slot),
                change,
            });
        }
        ends.push(effects.len());
    }
    // Each model raises at most a `score.changed`.
    work.effects.events.reserve(models.len());
    let mut start = 0;
    for (model, end) in models.into_iter().zip(ends) {
        let (before, after) = rescore(work, model, &effects[start..end]);
        announce(work, model, before, after, run_threshold)?;
        start = end;
    }
    Ok(())
}

/// Decays the model's parts to now, applies the effects (noting each
/// change in the ledger) and keeps the new score: answers the score before
/// the effects and after. The standing is looked up once for all of it, and
/// created with the model's first event.
fn rescore(work: &mut Work, model: &ScoringModel, effects: &[Effect]) -> (f64, f64) {
    let Work {
        record,
        effects: changes,
        event,
        now,
        ..
    } = work;
    let (standing, mut changed) = record.scoring.standing_mut(&model.name);
    standing.align(model.slots());
    if model.half_life.is_some()
        && let Some(as_of) = standing.as_of
    {
        let factor = decay_factor(model, as_of, *now);
        standing.as_of = Some(*now);
        if factor != 1.0 {
            standing.decay(factor, model.slots());
        }
    }
    let before = standing.sum();
    // The event's ledger notes, found or opened with the first change.
    let mut notes = None;
    for effect in effects {
        let next = |was| effect.change.after(was);
        let change = match effect.slot {
            Some(slot) => standing.change_slot(slot, next),
            None => standing.change_part(effect.rule, next),
        };
        if change == 0.0 {
            continue;
        }
        let at =
            *notes.get_or_insert_with(|| notes_of(&mut changes.ledger, &record.key, event, *now));
        changes.ledger[at].entries.push(ScoreNote {
            model: model.name.as_str().into(),
            rule: effect.rule.into(),
            points: change,
        });
    }
    if notes.is_some() {
        standing.as_of.get_or_insert(*now);
        changed = true;
    }
    let mut after = standing.sum();
    if !after.is_finite() {
        after = before;
    } else if standing.score != after {
        standing.score = after;
        changed = true;
    }
    if changed {
        work.touch();
    }
    (before, after)
}

/// Where in the ledger this event's contributions to the record's scores
/// are: every model and the `score` action add to one [`ScoreNotes`].
fn notes_of(
    ledger: &mut Vec<ScoreNotes>,
    record: &RecordKey,
    event: &Event,
    now: DateTime<Utc>,
) -> usize {
    match ledger
        .iter()
        .rposition(|n| n.seq == event.seq && n.record == *record)
    {
        Some(index) => index,
        None => {
            ledger.push(ScoreNotes {
                record: record.clone(),
                event_id: event.id.clone(),
                seq: event.seq,
                at: now,
                entries: Vec::new(),
            });
            ledger.len() - 1
        }
    }
}

/// Whether an attribute condition could read differently than at the last
/// event: it reads only user fields, so it needs evaluating when the record
/// is new or one of those fields changed (most events, a page view or an
/// email open, change none). Anything else it reads (kept fields, the
/// event, the owner, `now`) makes it evaluate every time.
fn may_have_changed(work: &Work, reads: Option<&[String]>) -> bool {
    if work.created {
        return true;
    }
    match reads {
        Some(fields) => fields
            .iter()
            .any(|f| work.changed_fields.iter().any(|c| c == f)),
        None => true,
    }
}

/// The `score` action: points on a model outside its rules. Answers the
/// score before and after, or `None` if the model no longer exists.
pub(super) fn adjust(
    work: &mut Work,
    model_name: &str,
    rule: &str,
    points: f64,
    run_threshold: RunThreshold,
) -> Result<Option<(f64, f64)>, ReadError> {
    let workflows = work.workflows;
    let Some(model) = workflows.scoring.iter().find(|m| m.name == model_name) else {
        return Ok(None);
    };
    let rule = format!("action {rule}");
    let effect = Effect {
        rule: &rule,
        slot: None,
        change: Change::Add(points, None),
    };
    let (before, after) = rescore(work, model, &[effect]);
    announce(work, model, before, after, run_threshold)?;
    Ok(Some((before, after)))
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

/// A model's parts decayed to `at`, by rule name, without changing the
/// record.
pub fn parts_at(
    record: &Record,
    model: &ScoringModel,
    at: DateTime<Utc>,
) -> Vec<(CompactString, f64)> {
    let Some(standing) = record.scoring.get(&model.name) else {
        return Vec::new();
    };
    let factor = standing
        .as_of
        .map_or(1.0, |from| decay_factor(model, from, at));
    let mut decayed = standing.clone();
    decayed.align(model.slots());
    decayed.decay(factor, model.slots());
    decayed
        .parts_by_name()
        .into_iter()
        .map(|(rule, points)| (rule.into(), points))
        .collect()
}

/// Raises `score.changed` when the score moved, and `score.crossed` and
/// the threshold's actions for each threshold it rose to or through.
fn announce(
    work: &mut Work,
    model: &ScoringModel,
    before: f64,
    after: f64,
    run_threshold: RunThreshold,
) -> Result<(), ReadError> {
    if (after - before).abs() < 1e-9 {
        return Ok(());
    }
    work.raise(
        BuiltinEvent::ScoreChanged,
        json!({ "model": model.name, "from": round1(before), "to": round1(after) }),
    );
    for threshold in model
        .thresholds
        .iter()
        .filter(|t| before < t.at && after >= t.at)
    {
        work.raise(
            BuiltinEvent::ScoreCrossed,
            json!({ "model": model.name, "threshold": threshold.name, "at": threshold.at, "score": round1(after) }),
        );
        run_threshold(work, model, threshold)?;
    }
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workflows::{ScoreRule, ScoringModel};
    use crate::state::{ModelScore, RecordKey};
    use std::time::Duration;

    fn model(half_life_days: Option<u64>) -> ScoringModel {
        ScoringModel::new(
            "m".into(),
            "lead".into(),
            vec![ScoreRule {
                name: "visit".into(),
                trigger: ScoreTrigger::Event("page.viewed".into(), None),
                points: 10.0,
                max: None,
            }],
            half_life_days.map(|d| Duration::from_secs(d * 86_400)),
            vec![],
        )
    }

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::days(days)
    }

    #[test]
    fn points_halve_every_half_life_and_attributes_do_not_decay() {
        let with_title = |trigger| {
            let m = model(Some(30));
            let mut rules = m.rules.clone();
            rules.push(ScoreRule {
                name: "title".into(),
                trigger,
                points: 20.0,
                max: None,
            });
            ScoringModel::new(m.name, m.kind, rules, m.half_life, vec![])
        };
        let m = with_title(ScoreTrigger::Event("never".into(), None));
        let mut r = Record::new(
            RecordKey {
                kind: "lead".into(),
                id: "L".into(),
            },
            t(0),
        );
        let standing = ModelScore::with_parts(60.0, Some(t(0)), [("visit", 40.0), ("title", 20.0)]);
        r.scoring.insert("m", standing);
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
        let m = with_title(ScoreTrigger::Attribute(
            crate::config::expr::Condition::for_tests("true"),
        ));
        assert_eq!(
            at(&m, 60)["title"],
            20.0,
            "an attribute rule's part does not"
        );
    }

    #[test]
    fn an_event_sees_its_own_rules_and_every_attribute_rule_in_rule_order() {
        let rule = |name: &str, trigger| ScoreRule {
            name: name.into(),
            trigger,
            points: 1.0,
            max: None,
        };
        let on = |t: &str| ScoreTrigger::Event(t.into(), None);
        let when = || ScoreTrigger::Attribute(crate::config::expr::Condition::for_tests("true"));
        let m = ScoringModel::new(
            "m".into(),
            "lead".into(),
            vec![
                rule("b_attr", when()),
                rule("visit", on("page.viewed")),
                rule("open", on("email.opened")),
                rule("a_attr", when()),
                rule("visit2", on("page.viewed")),
            ],
            Some(Duration::from_secs(86_400)),
            vec![],
        );
        let names = |t: &str| {
            m.rules_for(t)
                .map(|(r, slot, _)| (r.name.clone(), slot))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("page.viewed"),
            [("b_attr", 0), ("visit", 1), ("a_attr", 3), ("visit2", 4)].map(|(n, s)| (n.into(), s))
        );
        assert_eq!(names("other"), [("b_attr".into(), 0), ("a_attr".into(), 3)]);
        let names = ["a_attr", "b_attr", "open", "visit", "visit2", "zz"];
        let mut standing = ModelScore::with_parts(0.0, None, names.map(|n| (n, 8.0)));
        standing.align(m.slots());
        standing.decay(0.5, m.slots());
        assert_eq!(
            standing.parts().collect::<Vec<_>>(),
            [
                ("b_attr", 8.0),
                ("visit", 4.0),
                ("open", 4.0),
                ("a_attr", 8.0),
                ("visit2", 4.0),
                ("zz", 4.0)
            ],
            "parts are laid out by the model's rules, others after; only the attribute rules' keep their value"
        );
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
