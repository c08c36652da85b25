//! `handoff:` routes a record to sales with context: refused while a
//! required field is missing, else a new owner, a task and a note.

use super::assign::{pick_owner, set_owner};
use super::task::{new_task, queue_task};
use super::{ActionResult, Done, Origin, render};
use crate::config::workflows::{Assignment, Handoff};
use crate::engine::Work;
use crate::state::BuiltinEvent;
use serde_json::json;

pub(in crate::engine) fn handoff(work: &mut Work, h: &Handoff, origin: &Origin) -> ActionResult {
    let missing: Vec<&String> = h
        .require
        .iter()
        .filter(|f| !work.record.has_value(f))
        .collect();
    let to_name = match &h.to {
        Assignment::Team { team, .. } => team.clone(),
        Assignment::Owner(email) => email.clone(),
    };
    if !missing.is_empty() {
        work.raise(
            BuiltinEvent::HandoffRejected,
            json!({ "to": to_name, "missing": missing }),
        );
        let list: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
        return Ok(Done::Refused(format!("missing {}", list.join(", "))));
    }
    let note = h.note.as_ref().map(|n| render(work, n, &[])).transpose()?;
    let title = match &h.task_title {
        Some(t) => render(work, t, &[])?,
        None => format!("Handoff: {} {}", work.record.key.kind, work.record.key.id),
    };
    let receiver = pick_owner(work, &h.to)?;
    let from = work.record.owner.clone();
    set_owner(work, receiver.clone());
    let mut task = new_task(
        work,
        origin,
        title,
        note.clone(),
        Some(receiver.clone()),
        None,
    );
    task.from_handoff = true;
    queue_task(work, task);
    work.raise(
        BuiltinEvent::HandoffCompleted,
        json!({ "from": from, "to": receiver, "team": to_name, "note": note, "task_id": origin.id }),
    );
    Ok(Done::Ok(Some(format!("handed to {receiver}"))))
}
