//! Timers the engine sets for later: `stage.stalled` while a record sits in
//! a stage, `task.overdue` for tasks past due. Each timer's id says what set
//! it; when it fires, the event is checked against the state that set it
//! (still in that stage visit, task still open), so a timer that outlived
//! its reason changes nothing.

use super::Work;
use crate::engine::ReadError;
use crate::state::{BuiltinEvent, NewEvent, Task, TaskStatus, Timer, TimerKind, TimerRef};
use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};

/// A timer raising `event` with `data` on the work's record.
fn timer(work: &Work, id: String, due_at: DateTime<Utc>, event: BuiltinEvent, data: Json) -> Timer {
    Timer {
        id,
        due_at,
        event: NewEvent::raised(event, work.record.key.clone(), data, due_at, None),
    }
}

/// Deletes a timer the engine no longer wants.
pub fn cancel(work: &mut Work, timer: Option<TimerRef>) {
    if let Some(t) = timer {
        work.effects.timers_done.push((t.due_at, t.id));
    }
}

/// On entering a stage: drops the previous stage's stall timer and sets
/// this one's (`stall_after` from now), so only the current visit can stall.
pub fn arm_stall(work: &mut Work, visit_index: usize) {
    let old = work.record.stall_timer.take();
    cancel(work, old);
    let Some(stage) = current_stage(work) else {
        return;
    };
    if let Some(after) = stage.stall_after {
        schedule_stall(work, visit_index, 1, after);
    }
}

fn schedule_stall(work: &mut Work, visit_index: usize, count: u64, after: std::time::Duration) {
    let (Some(entered), Ok(after)) = (
        work.record.stage_entered_at,
        chrono::Duration::from_std(after),
    ) else {
        return;
    };
    let due = work.now + after;
    let id = TimerKind::Stall.id(format_args!("{}/{visit_index}/{count}", work.record.key));
    let data = json!({
        "stage": work.record.stage,
        "pipeline": work.record.pipeline,
        "count": count,
        "days_in_stage": (due - entered).num_days(),
        "visit": visit_index,
    });
    let t = timer(work, id, due, BuiltinEvent::StageStalled, data);
    work.record.stall_timer = Some(t.reference());
    work.touch();
    work.effects.timers.push(t);
}

fn current_stage<'w>(work: &Work<'w>) -> Option<&'w crate::config::workflows::Stage> {
    let pipeline = work.workflows.pipeline_for(&work.record.key.kind)?;
    let stage = work.record.stage.as_deref()?;
    pipeline.stages.iter().find(|s| s.name == stage)
}

/// A `stage.stalled` from a stall timer: answers whether it still applies
/// (the record never left that stage visit) and, if so, sets the repeat.
/// Stalls posted from outside are taken as they are.
pub fn on_stalled(work: &mut Work) -> bool {
    if !matches!(TimerKind::of(&work.event.id), Some((TimerKind::Stall, _))) {
        return true;
    }
    let current = work
        .record
        .stall_timer
        .as_ref()
        .is_some_and(|t| t.id == work.event.id);
    if !current {
        return false;
    }
    work.record.stall_timer = None;
    work.touch();
    let count = work
        .event
        .data
        .get("count")
        .and_then(Json::as_u64)
        .unwrap_or(1);
    let visit = work
        .event
        .data
        .get("visit")
        .and_then(Json::as_u64)
        .unwrap_or(0) as usize;
    if let Some(repeat) = current_stage(work).and_then(|s| s.stall_repeat) {
        schedule_stall(work, visit, count + 1, repeat);
    }
    true
}

/// A timer for a task's due time.
pub fn arm_overdue(work: &mut Work, task: &Task) {
    if let Some(due) = task.due_at {
        let data = json!({ "task_id": task.id, "title": task.title, "owner": task.owner, "due_at": super::time(due) });
        let t = timer(
            work,
            overdue_id(&task.id),
            due,
            BuiltinEvent::TaskOverdue,
            data,
        );
        work.effects.timers.push(t);
    }
}

fn overdue_id(task: &str) -> String {
    TimerKind::Overdue.id(task)
}

/// Deletes a completed task's overdue timer.
pub fn disarm_overdue(work: &mut Work, task: &Task) {
    if let Some(due) = task.due_at {
        cancel(
            work,
            Some(TimerRef {
                due_at: due,
                id: overdue_id(&task.id),
            }),
        );
    }
}

/// A `task.overdue` from a task timer applies while the task is open.
pub fn on_overdue(work: &mut Work) -> Result<bool, ReadError> {
    let Some((TimerKind::Overdue, task_id)) = TimerKind::of(&work.event.id) else {
        return Ok(true);
    };
    Ok(work
        .state
        .task(task_id)?
        .is_some_and(|t| t.status == TaskStatus::Open))
}
