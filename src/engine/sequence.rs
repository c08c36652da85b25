//! Sequences (SPEC §3.6): enrolling, running steps until a wait or a closed
//! send window, and leaving on exit events.
//!
//! Every step runs while handling a step event (`dealflow.step`) fired by a
//! timer, even the first: enrolling only sets a timer due now. So a reply
//! that reaches the log before a step's event always wins, and each step
//! runs exactly once, as part of the event whose commit records it.

use super::actions::{self, ActionResult, Done, Origin};
use super::timers;
use super::{Work, internal};
use crate::config::send_window as window;
use crate::config::workflows::{Sequence, Step, StepKind};
use crate::engine::Effects;
use crate::engine::ReadError;
use crate::state::BuiltinEvent;
use crate::state::{Enrollment, EnrollmentStatus, ExitCause, NewEvent, Run, Timer, TimerKind};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use std::collections::VecDeque;

/// Where a waiting enrollment resumes.
#[derive(Debug, Clone, PartialEq)]
enum Resume {
    /// At the first step (a new enrollment).
    Start,
    /// At this step.
    Step(String),
    /// Only waits and exits were left: end like this.
    End(Ending),
}

/// A step timer's event data, as stored: `{"sequence": …, "resume": "start"
/// | "step" (with `step`) | "complete" | "exit" (with `reason`)}`.
#[derive(Serialize, Deserialize)]
struct StepTimerData {
    sequence: String,
    #[serde(flatten)]
    resume: ResumeData,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "resume", rename_all = "lowercase")]
enum ResumeData {
    Start,
    Step { step: String },
    Complete,
    Exit { reason: String },
}

impl Resume {
    /// The timer event's data.
    fn to_json(&self, sequence: &str) -> Json {
        let resume = match self.clone() {
            Resume::Start => ResumeData::Start,
            Resume::Step(step) => ResumeData::Step { step },
            Resume::End(Ending::Completed) => ResumeData::Complete,
            Resume::End(Ending::Exit(reason, _)) => ResumeData::Exit { reason },
        };
        let data = StepTimerData {
            sequence: sequence.to_owned(),
            resume,
        };
        serde_json::to_value(data).unwrap_or_default()
    }

    /// Where a step timer's event resumes; data it cannot read (only a
    /// timer set by another version could hold it) completes the enrollment.
    fn from_event(data: &Map<String, Json>) -> Resume {
        match serde_json::from_value::<StepTimerData>(Json::Object(data.clone())) {
            Ok(StepTimerData { resume, .. }) => match resume {
                ResumeData::Start => Resume::Start,
                ResumeData::Step { step } => Resume::Step(step),
                ResumeData::Complete => Resume::End(Ending::Completed),
                // Only an `exit:` step after waits is stored this way.
                ResumeData::Exit { reason } => Resume::End(Ending::Exit(reason, ExitCause::Step)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "A step timer's data cannot be read; the enrollment completes.");
                Resume::End(Ending::Completed)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Completed,
    Exit(String, ExitCause),
}

/// The `enroll` action.
pub(super) fn enroll(work: &mut Work, sequence: &str) -> Result<Done, ReadError> {
    let Some(definition) = work.workflows.sequences.get(sequence) else {
        return Ok(Done::Skipped(format!(
            "sequence {sequence} no longer exists"
        )));
    };
    let now = work.now;
    if let Some(existing) = work.enrollments()?.iter().find(|e| e.sequence == sequence) {
        if existing.is_active() {
            return Ok(Done::Skipped(format!("already enrolled in {sequence}")));
        }
        let allowed_again = match (definition.reenroll, existing.ended_at) {
            (Some(after), Some(ended)) => {
                chrono::Duration::from_std(after).is_ok_and(|d| now >= ended + d)
            }
            _ => false,
        };
        if !allowed_again {
            return Ok(Done::Skipped(format!(
                "was enrolled in {sequence} before and reenroll does not allow it yet"
            )));
        }
    }
    let mut enrollment = Enrollment::new(work.record.key.clone(), sequence, work.now);
    wait_for(work, &mut enrollment, Resume::Start, work.now);
    // Shown on the record: the step it waits on (SPEC §7: the next with an id).
    enrollment.next_step = first_step_id(&definition.steps);
    save(work, enrollment)?;
    work.raise(
        BuiltinEvent::SequenceEnrolled,
        json!({ "sequence": sequence }),
    );
    Ok(Done::Ok(Some(format!("enrolled in {sequence}"))))
}

/// The `unenroll` action.
pub(super) fn unenroll(work: &mut Work, sequence: Option<&str>) -> Result<Done, ReadError> {
    let names: Vec<String> = work
        .enrollments()?
        .iter()
        .filter(|e| e.is_active() && sequence.is_none_or(|s| s == e.sequence))
        .map(|e| e.sequence.clone())
        .collect();
    if names.is_empty() {
        return Ok(Done::Skipped("not enrolled".to_owned()));
    }
    for name in &names {
        exit(work, name, "unenrolled", ExitCause::Unenrolled)?;
    }
    Ok(Done::Ok(Some(format!("left {}", names.join(", ")))))
}

/// Ends every active enrollment whose `exit_on` lists the event's type.
pub(super) fn exit_on_event(work: &mut Work) -> Result<(), ReadError> {
    let event_type = work.event.event_type.clone();
    let sequences = &work.workflows.sequences;
    let exits_on = |name: &str| {
        sequences
            .get(name)
            .is_some_and(|s| s.exit_on.contains(&event_type))
    };
    if !sequences.keys().any(|name| exits_on(name)) {
        return Ok(());
    }
    let leaving: Vec<String> = work
        .enrollments()?
        .iter()
        .filter(|e| e.is_active() && exits_on(&e.sequence))
        .map(|e| e.sequence.clone())
        .collect();
    for name in leaving {
        exit(work, &name, &event_type, ExitCause::Event)?;
    }
    Ok(())
}

/// Ends an active enrollment with a reason.
fn exit(work: &mut Work, sequence: &str, reason: &str, cause: ExitCause) -> Result<(), ReadError> {
    end(
        work,
        sequence,
        EnrollmentStatus::Exited,
        Some((reason, cause)),
    )?;
    work.raise(
        BuiltinEvent::SequenceExited,
        json!({ "sequence": sequence, "reason": reason }),
    );
    Ok(())
}

fn end(
    work: &mut Work,
    sequence: &str,
    status: EnrollmentStatus,
    reason: Option<(&str, ExitCause)>,
) -> Result<(), ReadError> {
    let Some(mut e) = work
        .enrollments()?
        .iter()
        .find(|e| e.sequence == sequence && e.is_active())
        .cloned()
    else {
        return Ok(());
    };
    timers::cancel(work, e.timer.take());
    e.status = status;
    e.exit_reason = reason.map(|(why, _)| why.to_owned());
    e.exit_cause = reason.map(|(_, cause)| cause);
    e.ended_at = Some(work.now);
    e.next_step = None;
    e.next_at = None;
    save(work, e)
}

fn save(work: &mut Work, enrollment: Enrollment) -> Result<(), ReadError> {
    let enrollments = work.enrollments()?;
    enrollments.retain(|e| e.sequence != enrollment.sequence);
    enrollments.push(enrollment.clone());
    work.effects
        .enrollments
        .retain(|e| e.sequence != enrollment.sequence);
    work.effects.enrollments.push(enrollment);
    Ok(())
}

/// Sets the enrollment's timer: resume like `resume` at `due`.
fn wait_for(work: &mut Work, e: &mut Enrollment, resume: Resume, due: DateTime<Utc>) {
    timers::cancel(work, e.timer.take());
    let id = TimerKind::Step.id(format_args!(
        "{}/{}/{}/{}",
        e.record,
        e.sequence,
        e.enrolled_at.timestamp_millis(),
        work.event.seq
    ));
    let data = resume.to_json(&e.sequence);
    let timer = Timer {
        id,
        due_at: due,
        event: NewEvent {
            id: None,
            event_type: internal::STEP.to_owned(),
            record: e.record.clone(),
            fields: Map::new(),
            data: data.as_object().cloned().unwrap_or_default(),
            occurred_at: due,
            depth: 0,
        },
    };
    e.timer = Some(timer.reference());
    e.next_step = match resume {
        Resume::Step(id) => Some(id),
        _ => None,
    };
    e.next_at = Some(due);
    work.effects.timers.push(timer);
}

/// Handles a step event: runs the enrollment's steps from the one it waits
/// on until the next wait, a closed window, an exit or the end.
pub(super) fn resume(work: &mut Work) -> Result<(), ReadError> {
    let name = work
        .event
        .data
        .get("sequence")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(mut e) = work
        .enrollments()?
        .iter()
        .find(|e| e.sequence == name && e.is_active())
        .cloned()
    else {
        return Ok(());
    };
    // Only the timer the enrollment waits on may move it.
    if e.timer.as_ref().is_none_or(|t| t.id != work.event.id) {
        return Ok(());
    }
    e.timer = None;
    let workflows = work.workflows;
    let Some(definition) = workflows.sequences.get(&name) else {
        save(work, e)?;
        return exit(work, &name, "definition_removed", ExitCause::Definition);
    };
    let mut run = actions::new_run(work, &format!("seq-{name}"), format!("sequence:{name}"));
    let ending = match Resume::from_event(&work.event.data) {
        Resume::Start => {
            let queue = definition.steps.iter().collect();
            run_steps(work, definition, &mut e, &mut run, queue)?
        }
        Resume::Step(id) => match continuation(&definition.steps, &id) {
            Some(steps) => run_steps(work, definition, &mut e, &mut run, steps.into())?,
            // Reload removed the step (issue: reload decides before this happens).
            None => Some(Ending::Exit(
                "definition_changed".to_owned(),
                ExitCause::Definition,
            )),
        },
        Resume::End(ending) => Some(ending),
    };
    save(work, e)?;
    match ending {
        Some(Ending::Completed) => {
            end(work, &name, EnrollmentStatus::Completed, None)?;
            work.raise(BuiltinEvent::SequenceCompleted, json!({ "sequence": name }));
        }
        Some(Ending::Exit(reason, cause)) => exit(work, &name, &reason, cause)?,
        None => {}
    }
    work.effects.runs.push(run);
    Ok(())
}

/// Runs steps in order; answers how the enrollment ended, or `None` when it
/// waits (its timer set).
fn run_steps<'s>(
    work: &mut Work,
    definition: &'s Sequence,
    e: &mut Enrollment,
    run: &mut Run,
    mut queue: VecDeque<&'s Step>,
) -> Result<Option<Ending>, ReadError> {
    while let Some(step) = queue.pop_front() {
        match &step.kind {
            StepKind::Wait(_) => {
                let (due, resume) = after_waits(work.now, step, &mut queue);
                if due <= work.now {
                    continue;
                }
                wait_for(work, e, resume, due);
                return Ok(None);
            }
            StepKind::Exit(reason) => {
                return Ok(Some(Ending::Exit(reason.clone(), ExitCause::Step)));
            }
            StepKind::Branch {
                condition,
                then,
                otherwise,
            } => {
                let scope = work.scope(&[]);
                let taken = match work.workflows.expressions.eval(condition, &scope) {
                    Ok(true) => then,
                    Ok(false) => otherwise,
                    Err(err) => {
                        let why = format!("condition failed: {err}");
                        actions::record_named_outcome(
                            work,
                            run,
                            step_name(step, "if"),
                            Err(why.into()),
                        )?;
                        return Ok(Some(Ending::Exit("failed".to_owned(), ExitCause::Failed)));
                    }
                };
                for s in taken.iter().rev() {
                    queue.push_front(s);
                }
            }
            StepKind::Email(_) | StepKind::Task(_) | StepKind::Webhook(_) | StepKind::Sms(_) => {
                let id = step.id.clone().unwrap_or_default();
                let zone = send_zone(work, definition, run);
                if let Some(at) = window_opens(work, definition, zone, step, &id) {
                    match at {
                        Some(at) => {
                            wait_for(work, e, Resume::Step(id), at);
                            return Ok(None);
                        }
                        None => {
                            let why = "the send window never opens (for a text: outside settings.sms.quiet_hours)".to_owned();
                            actions::record_named_outcome(
                                work,
                                run,
                                step_name(step, "email"),
                                Err(why.into()),
                            )?;
                            return Ok(Some(Ending::Exit("failed".to_owned(), ExitCause::Failed)));
                        }
                    }
                }
                let (kind, result) = run_step(work, definition, e, step, &id, zone)?;
                let failed =
                    actions::record_named_outcome(work, run, step_name(step, kind), result)?;
                if failed {
                    return Ok(Some(Ending::Exit("failed".to_owned(), ExitCause::Failed)));
                }
            }
        }
    }
    Ok(Some(Ending::Completed))
}

/// Times the send window and quiet hours are tried against each other
/// before a text is taken as never able to go.
const QUIET_TRIES: usize = 8;

/// Emails, texts and tasks wait for the send window, and texts also for
/// `settings.sms.quiet_hours` to end (here rather than only at delivery,
/// so a sequence's timeline, and `simulate`, show when a text really
/// goes): `Some(Some(t))` when it may go at `t`, `Some(None)` when it
/// never can, `None` to go now. Webhooks go at once.
fn window_opens(
    work: &Work,
    definition: &Sequence,
    zone: Option<Tz>,
    step: &Step,
    id: &str,
) -> Option<Option<DateTime<Utc>>> {
    let quiet = match step.kind {
        StepKind::Webhook(_) => return None,
        StepKind::Sms(_) => work
            .workflows
            .settings
            .sms
            .as_ref()
            .and_then(|s| s.quiet_hours),
        _ => None,
    };
    let calendar = definition.send_window.as_ref();
    if calendar.is_none() && quiet.is_none() {
        return None;
    }
    let zone = zone
        .or(calendar.map(|c| c.timezone))
        .unwrap_or(work.workflows.settings.timezone);
    let key = format!("{}/{}/{id}", work.record.key, definition.name);
    let mut at = work.now;
    for _ in 0..QUIET_TRIES {
        let open = match calendar {
            Some(calendar) => match window::send_time(calendar, zone, at, &key) {
                Some(open) => open,
                None => return Some(None),
            },
            None => at,
        };
        match quiet.and_then(|q| window::quiet_until(&q, zone, open)) {
            Some(end) => at = end,
            None if open <= work.now => return None,
            None => return Some(Some(open)),
        }
    }
    Some(None)
}

/// The recipient's zone when the sequence names one and it renders to a
/// known zone; else (`None`) the send window's. A zone that renders but
/// does not exist is written into the run: the send goes out in the
/// window's zone rather than not at all.
fn send_zone(work: &mut Work, definition: &Sequence, run: &mut Run) -> Option<Tz> {
    let template = definition.recipient_timezone.as_ref()?;
    let scope = work.scope(&[]);
    // A missing field (no timezone known) is the common case: no note.
    let text = work.workflows.expressions.render(template, &scope).ok()?;
    let text = text.trim();
    match text.parse::<Tz>() {
        Ok(zone) => Some(zone),
        Err(_) if text.is_empty() => None,
        Err(_) => {
            let why = format!(
                "recipient_timezone is \"{text}\", which is not a time zone; the send window's zone was used"
            );
            // A skipped outcome carries no store error: nothing to pass on.
            let _ = actions::record_named_outcome(
                work,
                run,
                "recipient_timezone".to_owned(),
                Ok(Done::Skipped(why)),
            );
            None
        }
    }
}

fn run_step(
    work: &mut Work,
    definition: &Sequence,
    e: &mut Enrollment,
    step: &Step,
    id: &str,
    zone: Option<Tz>,
) -> Result<(&'static str, ActionResult), ReadError> {
    let zone = zone.or(definition.send_window.as_ref().map(|c| c.timezone));
    e.last_step = Some(id.to_owned());
    let mut origin = Origin {
        id: format!("{:016}-{id}", work.event.seq),
        rule: format!("sequence:{}", definition.name),
        step: Some(id.to_owned()),
        thread: None,
        zone: zone.map(|z| z.name().to_owned()),
    };
    Ok(match &step.kind {
        StepKind::Email(action) => {
            origin.thread = action
                .thread
                .as_ref()
                .and_then(|t| e.messages.get(t).cloned());
            let result = actions::email::email(work, action, &origin);
            if matches!(result, Ok(Done::Ok(_))) {
                e.messages.insert(id.to_owned(), origin.id.clone());
            }
            ("email", result)
        }
        StepKind::Task(action) => ("task", actions::task::task(work, action, &origin)),
        StepKind::Webhook(action) => ("webhook", actions::webhook::webhook(work, action, &origin)),
        StepKind::Sms(action) => ("sms", actions::sms::sms(work, action, &origin)),
        _ => ("step", Ok(Done::Skipped("not an action step".to_owned()))),
    })
}

/// Consumes consecutive waits; answers when they end and where to resume.
fn after_waits<'s>(
    now: DateTime<Utc>,
    first: &'s Step,
    queue: &mut VecDeque<&'s Step>,
) -> (DateTime<Utc>, Resume) {
    let mut due = now + wait_of(first);
    while let Some(next) = queue.front() {
        match &next.kind {
            StepKind::Wait(_) => {
                due += wait_of(next);
                queue.pop_front();
            }
            StepKind::Exit(reason) => {
                return (
                    due,
                    Resume::End(Ending::Exit(reason.clone(), ExitCause::Step)),
                );
            }
            _ => match &next.id {
                Some(id) => return (due, Resume::Step(id.clone())),
                None => return (due, Resume::End(Ending::Completed)),
            },
        }
    }
    (due, Resume::End(Ending::Completed))
}

fn wait_of(step: &Step) -> chrono::Duration {
    match step.kind {
        StepKind::Wait(d) => chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
        _ => chrono::Duration::zero(),
    }
}

fn first_step_id(steps: &[Step]) -> Option<String> {
    steps.iter().find_map(|s| s.id.clone())
}

/// The steps left to run from step `id` (inclusive), across nested branches.
fn continuation<'s>(steps: &'s [Step], id: &str) -> Option<Vec<&'s Step>> {
    for (i, step) in steps.iter().enumerate() {
        if step.id.as_deref() == Some(id) {
            return Some(steps[i..].iter().collect());
        }
        if let StepKind::Branch {
            then, otherwise, ..
        } = &step.kind
        {
            for branch in [then, otherwise] {
                if let Some(mut rest) = continuation(branch, id) {
                    rest.extend(&steps[i + 1..]);
                    return Some(rest);
                }
            }
        }
    }
    None
}

fn step_name(step: &Step, kind: &str) -> String {
    match &step.id {
        Some(id) => format!("{kind} ({id})"),
        None => kind.to_owned(),
    }
}

/// Where a reload moves a waiting enrollment (SPEC §3.6 "Reload").
#[derive(Debug, Clone, PartialEq)]
pub enum EnrollmentMove {
    /// Wait on this step of the new definition instead (renamed, or the
    /// step after a removed one).
    To(String),
    /// Nothing follows: complete when the wait ends.
    Complete,
    /// Leave now with this reason.
    Exit(String),
}

/// The changes that move one waiting enrollment: its `next_step`, and its
/// timer rewritten in place (same id and due time) to resume at the new
/// step; or its exit, with the timer deleted and `sequence.exited` raised.
pub fn move_enrollment(
    enrollment: &Enrollment,
    to: &EnrollmentMove,
    now: DateTime<Utc>,
) -> Effects {
    let mut changes = Effects::default();
    let mut e = enrollment.clone();
    let resume = match to {
        EnrollmentMove::To(step) => Resume::Step(step.clone()),
        EnrollmentMove::Complete => Resume::End(Ending::Completed),
        EnrollmentMove::Exit(reason) => {
            if let Some(t) = e.timer.take() {
                changes.timers_done.push((t.due_at, t.id));
            }
            e.status = EnrollmentStatus::Exited;
            e.exit_reason = Some(reason.clone());
            e.exit_cause = Some(ExitCause::Definition);
            e.ended_at = Some(now);
            e.next_step = None;
            e.next_at = None;
            changes.events.push(NewEvent::raised(
                BuiltinEvent::SequenceExited,
                e.record.clone(),
                json!({ "sequence": e.sequence, "reason": reason }),
                now,
                None,
            ));
            changes.enrollments.push(e);
            return changes;
        }
    };
    e.next_step = match &resume {
        Resume::Step(id) => Some(id.clone()),
        _ => None,
    };
    if let Some(t) = &e.timer {
        changes.timers.push(Timer {
            id: t.id.clone(),
            due_at: t.due_at,
            event: NewEvent {
                id: None,
                event_type: internal::STEP.to_owned(),
                record: e.record.clone(),
                fields: Map::new(),
                data: resume
                    .to_json(&e.sequence)
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                occurred_at: t.due_at,
                depth: 0,
            },
        });
    }
    changes.enrollments.push(e);
    changes
}

/// The id'd steps that follow step `id` in `steps`, in order (across
/// nested branches), for `on_step_removed: next`.
pub fn steps_after(steps: &[Step], id: &str) -> Vec<String> {
    continuation(steps, id)
        .unwrap_or_default()
        .into_iter()
        .skip(1)
        .filter_map(|s| s.id.clone())
        .collect()
}

/// Whether a definition has a step with this id.
pub fn has_step(steps: &[Step], id: &str) -> bool {
    continuation(steps, id).is_some()
}

/// The step that says it was renamed from `old`, if any.
pub fn renamed_step(steps: &[Step], old: &str) -> Option<String> {
    steps.iter().find_map(|s| {
        if s.renamed_from.as_deref() == Some(old) {
            return s.id.clone();
        }
        match &s.kind {
            StepKind::Branch {
                then, otherwise, ..
            } => renamed_step(then, old).or_else(|| renamed_step(otherwise, old)),
            _ => None,
        }
    })
}
