//! `scoring:`: point rules, decay and thresholds.

use super::actions::{self, ActionSite, finite};
use super::context::{Cx, Scope};
use super::rules::check_event_type;
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::loader::SourceSet;
use crate::config::model::{Located, ScoreRuleSpec, ScoringSpec};
use crate::config::workflows::{ScoreRule, ScoreTrigger, ScoringModel, Threshold};
use std::collections::BTreeSet;

/// Compiles every scoring model, in file order.
pub fn compile(set: &SourceSet, symbols: &Symbols, cx: &mut Cx) -> Vec<ScoringModel> {
    let mut out = Vec::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.scoring {
            if let Some(model) = compile_model(spec, symbols, cx) {
                out.push(model);
            }
        }
    }
    out
}

fn compile_model(spec: &ScoringSpec, symbols: &Symbols, cx: &mut Cx) -> Option<ScoringModel> {
    let kind = spec.kind.get();
    let scope = Scope::record(Some(kind));
    if spec.rules.is_empty() {
        cx.error(
            &spec.name,
            Code::Missing,
            format!("scoring model \"{}\" has no rules", spec.name.get()),
        );
    }
    let rules: Vec<Option<ScoreRule>> = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(i, r, &scope, cx))
        .collect();
    let half_life = match &spec.decay {
        None => Some(None),
        Some(d) => cx.positive_duration(&d.half_life, "half_life").map(Some),
    };
    let mut names = BTreeSet::new();
    let site = ActionSite {
        scope: scope.clone(),
        kind: Some(kind),
        owner: "scoring model",
    };
    let thresholds: Vec<Option<Threshold>> = spec
        .thresholds
        .iter()
        .map(|t| {
            if !names.insert(t.name.get().clone()) {
                cx.error(&t.name, Code::Duplicate, format!("threshold \"{}\" appears twice in model \"{}\"", t.name.get(), spec.name.get()));
            }
            let at_ok = finite(cx, &t.at, "at");
            if t.actions.is_empty() {
                cx.error(&t.name, Code::Missing, format!("threshold \"{}\" has no actions, so crossing it would do nothing; add do: [...]", t.name.get()));
                return None;
            }
            let actions = actions::compile_all(&t.actions, &site, symbols, cx)?;
            at_ok.then(|| Threshold {
                name: t.name.get().clone(),
                at: *t.at.get(),
                actions,
            })
        })
        .collect();
    Some(ScoringModel::new(
        spec.name.get().clone(),
        kind.clone(),
        rules.into_iter().collect::<Option<Vec<_>>>()?,
        half_life?,
        thresholds.into_iter().collect::<Option<Vec<_>>>()?,
    ))
    .filter(|m| !m.rules.is_empty())
}

fn compile_rule(
    index: usize,
    at: &Located<ScoreRuleSpec>,
    scope: &Scope,
    cx: &mut Cx,
) -> Option<ScoreRule> {
    let r = at.get();
    let trigger = match (&r.on, &r.when) {
        (Some(on), None) => {
            let condition = match &r.condition {
                None => Some(None),
                Some(c) => cx.condition(c, scope).map(Some),
            };
            let ok = check_event_type(on, cx);
            ScoreTrigger::Event(on.get().clone(), condition.filter(|_| ok)?)
        }
        (None, Some(when)) => {
            if let Some(c) = &r.condition {
                cx.error(
                    c,
                    Code::Conflict,
                    "if only works with on; an attribute rule's condition is its when",
                );
                return None;
            }
            ScoreTrigger::Attribute(cx.condition(when, scope)?)
        }
        _ => {
            cx.error(
                at,
                Code::Missing,
                "a scoring rule needs either on (an event) or when (an attribute condition)",
            );
            return None;
        }
    };
    let points_ok = finite(cx, &r.points, "points");
    if *r.points.get() == 0.0 {
        cx.warning(
            &r.points,
            Code::NoEffect,
            "0 points: this rule never changes the score",
        );
    }
    let max_ok = match &r.max {
        Some(m) if *m.get() <= 0.0 || !m.get().is_finite() => {
            cx.error(m, Code::Value, "max must be a positive number: the most points (or, for negative rules, the most removed) this rule can account for");
            false
        }
        _ => true,
    };
    let name = r
        .name
        .as_ref()
        .map_or_else(|| default_rule_name(index, &trigger), |n| n.get().clone());
    (points_ok && max_ok).then(|| ScoreRule {
        name,
        trigger,
        points: *r.points.get(),
        max: r.max.as_ref().map(|m| *m.get()),
    })
}

/// "#2 page.viewed" or "#3 when": position and trigger (SPEC §7).
fn default_rule_name(index: usize, trigger: &ScoreTrigger) -> String {
    match trigger {
        ScoreTrigger::Event(t, _) => format!("#{} {t}", index + 1),
        ScoreTrigger::Attribute(c) => format!("#{} when {}", index + 1, c.source),
    }
}
