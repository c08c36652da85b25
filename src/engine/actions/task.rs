//! `task:` queues a task for a person, with an overdue timer when it has
//! a due time.

use super::{ActionResult, Done, Origin, render};
use crate::config::workflows::TaskAction;
use crate::engine::Work;
use crate::state::{BuiltinEvent, Task, TaskStatus};
use serde_json::json;

pub(in crate::engine) fn task(work: &mut Work, t: &TaskAction, origin: &Origin) -> ActionResult {
    let title = render(work, &t.title, &[])?;
    let owner = match &t.owner {
        Some(o) => Some(render(work, o, &[])?),
        None => work.record.owner.clone(),
    };
    let notes = t.notes.as_ref().map(|n| render(work, n, &[])).transpose()?;
    let due_at = t
        .due
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| work.now + d);
    let detail = format!("task {}", origin.id);
    let task = new_task(work, origin, title, notes, owner, due_at);
    queue_task(work, task);
    Ok(Done::Ok(Some(detail)))
}

pub(in crate::engine) fn new_task(
    work: &Work,
    origin: &Origin,
    title: String,
    notes: Option<String>,
    owner: Option<String>,
    due_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Task {
    Task {
        id: origin.id.clone(),
        record: work.record.key.clone(),
        title,
        notes,
        owner,
        due_at,
        status: TaskStatus::Open,
        created_at: work.now,
        completed_at: None,
        created_by: origin.rule.clone(),
        step: origin.step.clone(),
        from_handoff: false,
    }
}

pub(in crate::engine) fn queue_task(work: &mut Work, task: Task) {
    if let Some(o) = &task.owner {
        *work.open_tasks.entry(o.clone()).or_default() += 1;
    }
    work.raise(
        BuiltinEvent::TaskCreated,
        json!({ "task_id": task.id, "title": task.title, "owner": task.owner, "step": task.step }),
    );
    crate::engine::timers::arm_overdue(work, &task);
    work.effects.tasks.push(task);
}
