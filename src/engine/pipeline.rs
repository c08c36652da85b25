//! Stage gating (SPEC §3.4): which moves are allowed and what blocks them.

use crate::config::expr::Expressions;
use crate::config::workflows::{Pipeline, Stage, StageRequirement};
use crate::state::Record;
use minijinja::Value;

/// Why a requirement is checked.
#[derive(Clone, Copy)]
enum Side {
    Enter,
    Leave,
}

/// Every unmet requirement of a move of `record` to `to`; empty means allowed.
pub fn unmet_for_move(
    pipeline: &Pipeline,
    record: &Record,
    to: &str,
    exprs: &Expressions,
    context: &Value,
) -> Vec<String> {
    let Some(target) = pipeline.stage_index(to) else {
        let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        return vec![format!(
            "\"{to}\" is not a stage of pipeline \"{}\" (stages: {})",
            pipeline.name,
            names.join(", ")
        )];
    };
    let stage = &pipeline.stages[target];
    let current = record
        .stage
        .as_deref()
        .and_then(|s| pipeline.stage_index(s));
    let mut unmet = Vec::new();
    if stage.outcome.is_some() {
        check(stage, Side::Enter, record, exprs, context, &mut unmet);
        return unmet;
    }
    match current {
        Some(from) if pipeline.stages[from].outcome.is_some() && !pipeline.allow_backward => {
            unmet.push(format!(
                "{} is closed ({}); reopening needs allow_backward",
                record.key, pipeline.stages[from].name
            ));
        }
        Some(from) if target < from => {
            // Backward: the reason to go back is usually that exit facts
            // turned out wrong, so only the target's entry is checked.
            if !pipeline.allow_backward {
                unmet.push(format!(
                    "pipeline \"{}\" does not allow moving back from {} to {to}",
                    pipeline.name, pipeline.stages[from].name
                ));
            }
            check(stage, Side::Enter, record, exprs, context, &mut unmet);
        }
        _ => {
            let first = current.map_or(0, |c| c + 1);
            if let Some(from) = current {
                check(
                    &pipeline.stages[from],
                    Side::Leave,
                    record,
                    exprs,
                    context,
                    &mut unmet,
                );
            }
            for skipped in pipeline.stages.get(first..target).unwrap_or(&[]) {
                check(skipped, Side::Enter, record, exprs, context, &mut unmet);
                check(skipped, Side::Leave, record, exprs, context, &mut unmet);
            }
            check(stage, Side::Enter, record, exprs, context, &mut unmet);
        }
    }
    unmet
}

/// Whether the record may enter the pipeline's first stage.
pub fn may_enter_first(
    pipeline: &Pipeline,
    record: &Record,
    exprs: &Expressions,
    context: &Value,
) -> bool {
    let mut unmet = Vec::new();
    if let Some(first) = pipeline.stages.first() {
        check(first, Side::Enter, record, exprs, context, &mut unmet);
    }
    unmet.is_empty()
}

fn check(
    stage: &Stage,
    side: Side,
    record: &Record,
    exprs: &Expressions,
    context: &Value,
    unmet: &mut Vec<String>,
) {
    let (list, verb) = match side {
        Side::Enter => (&stage.require, "enter"),
        Side::Leave => (&stage.exit_require, "leave"),
    };
    for requirement in list {
        match requirement {
            StageRequirement::Field(name) if !record.has_value(name) => {
                unmet.push(format!("{name} is required to {verb} {}", stage.name));
            }
            StageRequirement::Field(_) => {}
            StageRequirement::Check { condition, message } => {
                match exprs.eval(condition, context) {
                    Ok(true) => {}
                    Ok(false) => unmet.push(message.clone()),
                    Err(e) => unmet.push(format!("{message} (check failed: {e})")),
                }
            }
        }
    }
}
