//! `pipelines:`: stages, entry/exit requirements, stall thresholds.

use super::context::{Cx, Scope};
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::loader::SourceSet;
use crate::config::model::{Located, PipelineSpec, Requirement, StageSpec};
use crate::config::workflows::{Pipeline, Stage, StageRequirement};
use std::collections::{BTreeMap, BTreeSet};

/// Compiles every pipeline, keyed by the record kind it is for.
pub fn compile(set: &SourceSet, symbols: &Symbols, cx: &mut Cx) -> BTreeMap<String, Pipeline> {
    let mut out = BTreeMap::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.pipelines {
            let owns_kind = symbols
                .pipelines
                .get(spec.kind.get())
                .is_some_and(|(name, _)| name == spec.name.get());
            if let Some(p) = compile_pipeline(spec, cx).filter(|_| owns_kind) {
                out.insert(p.kind.clone(), p);
            }
        }
    }
    out
}

fn compile_pipeline(spec: &PipelineSpec, cx: &mut Cx) -> Option<Pipeline> {
    if spec.stages.is_empty() {
        cx.error(
            &spec.name,
            Code::Missing,
            format!("pipeline \"{}\" has no stages", spec.name.get()),
        );
        return None;
    }
    let scope = Scope::record(Some(spec.kind.get()));
    let mut names = BTreeSet::new();
    let mut stages = Vec::new();
    let mut ok = true;
    for st in &spec.stages {
        if !names.insert(st.name.get().clone()) {
            cx.error(
                &st.name,
                Code::Duplicate,
                format!(
                    "stage \"{}\" appears twice in pipeline \"{}\"",
                    st.name.get(),
                    spec.name.get()
                ),
            );
            ok = false;
        }
        match compile_stage(st, &scope, cx) {
            Some(stage) => stages.push(stage),
            None => ok = false,
        }
        ok &= check_probability(spec, st, cx);
    }
    let first_is_outcome = spec.stages.first().is_some_and(|s| s.outcome.is_some());
    if first_is_outcome {
        cx.error(
            &spec.stages[0].name,
            Code::Conflict,
            "the first stage cannot be an outcome stage; records start there",
        );
        ok = false;
    }
    if let Some(value) = spec.value.as_ref().filter(|v| v.get().trim().is_empty()) {
        cx.error(
            value,
            Code::Value,
            "value names the field that holds a deal's value, e.g. value: amount",
        );
        ok = false;
    }
    ok.then(|| Pipeline {
        name: spec.name.get().clone(),
        kind: spec.kind.get().clone(),
        allow_backward: spec.allow_backward,
        stages,
        value: spec.value.as_ref().map(|v| v.get().clone()),
    })
}

/// A stage's win probability: a share from 0 to 1, only where the pipeline
/// says which field holds the value, never on an outcome stage (won is 1,
/// lost 0). A forecasting pipeline's stage without one is warned about: its
/// deals add nothing to the weighted forecast.
fn check_probability(pipeline: &PipelineSpec, st: &StageSpec, cx: &mut Cx) -> bool {
    let Some(p) = &st.probability else {
        if pipeline.value.is_some() && st.outcome.is_none() {
            cx.warning(
                &st.name, Code::NoEffect,
                format!(
                    "stage \"{}\" has no probability: its deals add nothing to the weighted forecast",
                    st.name.get()
                ),
            );
        }
        return true;
    };
    let problem = if !(0.0..=1.0).contains(p.get()) {
        Some((
            Code::Value,
            "probability is a share from 0 to 1, e.g. 0.4 for 40%".to_owned(),
        ))
    } else if let Some(outcome) = &st.outcome {
        Some((
            Code::Conflict,
            format!(
                "an outcome stage's probability is fixed ({} is {}); remove it",
                st.name.get(),
                if *outcome.get() == crate::config::model::Outcome::Won {
                    1
                } else {
                    0
                }
            ),
        ))
    } else if pipeline.value.is_none() {
        Some((
            Code::Missing,
            format!(
                "probability needs value: on pipeline \"{}\" (the field that holds a deal's value, e.g. value: amount)",
                pipeline.name.get()
            ),
        ))
    } else {
        None
    };
    match problem {
        Some((code, message)) => {
            cx.error(p, code, message);
            false
        }
        None => true,
    }
}

fn compile_stage(st: &StageSpec, scope: &Scope, cx: &mut Cx) -> Option<Stage> {
    let require = requirements(&st.require, scope, cx);
    let exit_require = requirements(&st.exit_require, scope, cx);
    let stall_after = st
        .stall_after
        .as_ref()
        .map(|d| cx.positive_duration(d, "stall_after"));
    let stall_repeat = st
        .stall_repeat
        .as_ref()
        .map(|d| cx.positive_duration(d, "stall_repeat"));
    if let (Some(repeat), None) = (&st.stall_repeat, &st.stall_after) {
        cx.error(
            repeat,
            Code::Missing,
            "stall_repeat needs stall_after: the first stall comes before any repeat",
        );
    }
    if let (Some(outcome), false) = (&st.outcome, st.exit_require.is_empty()) {
        cx.error(
            outcome,
            Code::Conflict,
            "an outcome stage is final, so exit_require can never apply; remove it",
        );
    }
    Some(Stage {
        name: st.name.get().clone(),
        require: require?,
        exit_require: exit_require?,
        stall_after: stall_after.flatten(),
        stall_repeat: stall_repeat.flatten(),
        outcome: st.outcome.as_ref().map(|o| *o.get()),
        probability: match st.outcome.as_ref().map(|o| *o.get()) {
            Some(crate::config::model::Outcome::Won) => 1.0,
            Some(crate::config::model::Outcome::Lost) => 0.0,
            None => st.probability.as_ref().map_or(0.0, |p| *p.get()),
        },
    })
    .filter(|_| stall_after.is_none_or(|d| d.is_some()) && stall_repeat.is_none_or(|d| d.is_some()))
}

fn requirements(
    list: &[Located<Requirement>],
    scope: &Scope,
    cx: &mut Cx,
) -> Option<Vec<StageRequirement>> {
    let compiled: Vec<Option<StageRequirement>> = list
        .iter()
        .map(|r| match r.get() {
            Requirement::Field(name) if name.trim().is_empty() => {
                cx.error(r, Code::Missing, "a required field needs a name");
                None
            }
            Requirement::Field(name) => Some(StageRequirement::Field(name.clone())),
            Requirement::Check(check) => {
                let condition = cx.condition(&check.check, scope)?;
                let message = check.message.as_ref().map_or_else(
                    || format!("{} must hold", check.check.get()),
                    |m| m.get().clone(),
                );
                Some(StageRequirement::Check { condition, message })
            }
        })
        .collect();
    compiled.into_iter().collect()
}
