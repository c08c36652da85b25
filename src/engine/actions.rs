//! Running rules: conditions, then actions in order. A failing action stops
//! its run and raises `action.failed`; other rules are not affected.

use super::{MoveResult, Work, context};
use crate::config::expr::TextTemplate;
use crate::config::model::Strategy;
use crate::config::workflows::{
    Action, Assignment, EmailAction, EmailContent, FieldValue, Handoff, JsonTemplate, NotifyAction,
    NotifyTarget, Rule, TaskAction, WebhookAction,
};
use crate::state::{
    ActionOutcome, Audience, BodyFormat, BuiltinEvent, Delivery, OutboxEntry, Run, Task, TaskStatus,
};
use crate::store::StoreError;
use serde_json::{Value as Json, json};

/// Where an action comes from: its stable id (outbox row, task), the rule
/// or sequence that ran it, and for sequence steps the step and the
/// delivery context the sequence decided.
#[derive(Debug, Clone, Default)]
pub(super) struct Origin {
    pub id: String,
    pub rule: String,
    pub step: Option<String>,
    /// Outbox id of the message to follow up in the same thread.
    pub thread: Option<String>,
    /// Zone the send was timed in.
    pub zone: Option<String>,
}

/// How one action ended, before it is written down.
pub(super) enum Done {
    Ok(Option<String>),
    Refused(String),
    Skipped(String),
}

/// Why an action failed: a sentence for run history and `action.failed`.
pub(super) type Failure = String;

pub(super) type ActionResult = Result<Done, Failure>;

/// Runs every rule the event triggers, in file order (found through the
/// compiled trigger index, never by scanning all rules).
pub fn run_rules(work: &mut Work) -> Result<(), StoreError> {
    let kind = work.record.key.kind.clone();
    let rules: Vec<(usize, &Rule)> = work
        .workflows
        .rules_for(&work.event.event_type)
        .filter(|(_, r)| r.kind.as_deref().is_none_or(|k| k == kind))
        .collect();
    for (index, rule) in rules {
        run_rule(work, index, rule)?;
    }
    Ok(())
}

/// A run of `rule` on the work's event, matched until its condition says
/// otherwise; `suffix` makes its id unique within the event.
pub(super) fn new_run(work: &Work, suffix: &str, rule: String) -> Run {
    Run {
        id: format!("{:016}-{suffix}", work.event.seq),
        rule,
        event_id: work.event.id.clone(),
        event_type: work.event.event_type.clone(),
        record: work.record.key.clone(),
        version: work.workflows.version.clone(),
        condition: None,
        matched: true,
        saw: Default::default(),
        actions: Vec::new(),
        at: work.now,
        error: None,
    }
}

pub(super) fn run_rule(work: &mut Work, index: usize, rule: &Rule) -> Result<(), StoreError> {
    let mut run = new_run(work, &format!("{index:04}"), rule.name.clone());
    run.condition = rule.condition.as_ref().map(|c| c.source.clone());
    if let Some(condition) = &rule.condition {
        let scope = work.scope(&[]);
        run.saw = context::values_seen(&condition.source, &scope);
        match work.workflows.expressions.eval(condition, &scope) {
            Ok(matched) => run.matched = matched,
            Err(e) => {
                run.matched = false;
                run.error = Some(format!("condition failed: {e}"));
            }
        }
    }
    if run.matched {
        run_actions(work, &mut run, &rule.actions)?;
    }
    // History keeps runs that fired or failed; a condition that was simply
    // false on every event would otherwise dominate the store.
    if run.matched || run.error.is_some() {
        work.changes.runs.push(run);
    }
    Ok(())
}

/// Runs actions in order into `run`, stopping at the first failure.
pub(super) fn run_actions(
    work: &mut Work,
    run: &mut Run,
    actions: &[Action],
) -> Result<(), StoreError> {
    for (position, action) in actions.iter().enumerate() {
        let origin = Origin {
            id: format!("{}-{position:02}", run.id),
            rule: run.rule.clone(),
            ..Origin::default()
        };
        let result = run_action(work, action, &origin)?;
        if record_outcome(work, run, action, result) {
            break;
        }
    }
    Ok(())
}

/// Writes an action's outcome into the run; answers whether it failed.
fn record_outcome(work: &mut Work, run: &mut Run, action: &Action, result: ActionResult) -> bool {
    record_named_outcome(work, run, action_name(action).to_owned(), result)
}

/// Writes the outcome of an action (or sequence step) named `name`.
pub(super) fn record_named_outcome(
    work: &mut Work,
    run: &mut Run,
    name: String,
    result: ActionResult,
) -> bool {
    let (outcome, detail, failed) = match result {
        Ok(Done::Ok(detail)) => ("ok", detail, false),
        Ok(Done::Refused(why)) => ("refused", Some(why), false),
        Ok(Done::Skipped(why)) => ("skipped", Some(why), false),
        Err(why) => ("failed", Some(why), true),
    };
    if failed {
        let reason = work
            .workflows
            .secrets
            .redact(detail.as_deref().unwrap_or(""));
        work.raise(
            BuiltinEvent::ActionFailed,
            json!({ "rule": run.rule, "action": name, "reason": reason }),
        );
    }
    run.actions.push(ActionOutcome {
        action: name,
        outcome: outcome.to_owned(),
        detail: detail.map(|d| work.workflows.secrets.redact(&d)),
    });
    failed
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Email(_) => "email",
        Action::Notify(_) => "notify",
        Action::Webhook(_) => "webhook",
        Action::Task(_) => "task",
        Action::Set(_) => "set",
        Action::Move(_) => "move",
        Action::Assign(_) => "assign",
        Action::Handoff(_) => "handoff",
        Action::Enroll(_) => "enroll",
        Action::Unenroll(_) => "unenroll",
        Action::Score { .. } => "score",
        Action::Emit { .. } => "emit",
    }
}

fn run_action(
    work: &mut Work,
    action: &Action,
    origin: &Origin,
) -> Result<ActionResult, StoreError> {
    Ok(match action {
        Action::Set(fields) => set(work, fields),
        Action::Task(t) => task(work, t, origin),
        Action::Move(stage) => Ok(match work.request_move(stage) {
            MoveResult::Moved { .. } => Done::Ok(Some(format!("moved to {stage}"))),
            MoveResult::Refused(unmet) => Done::Refused(unmet.join("; ")),
            MoveResult::NotFound(why) => return Ok(Err(why)),
        }),
        Action::Assign(a) => match pick_owner(work, a)? {
            Ok(owner) => Ok(set_owner(work, owner)),
            Err(why) => Err(why),
        },
        Action::Handoff(h) => handoff(work, h, origin)?,
        Action::Enroll(sequence) => Ok(super::sequence::enroll(work, sequence)),
        Action::Unenroll(sequence) => Ok(super::sequence::unenroll(work, sequence.as_deref())),
        Action::Score { model, points } => {
            Ok(super::scoring::adjust(work, model, &origin.rule, *points)?)
        }
        Action::Emit { event_type, data } => emit(work, event_type, data.as_ref()),
        Action::Email(e) => email(work, e, origin)?,
        Action::Notify(n) => notify(work, n, origin),
        Action::Webhook(w) => webhook(work, w, origin),
    })
}

pub(super) fn render(
    work: &mut Work,
    template: &TextTemplate,
    extra: &[(&str, Json)],
) -> Result<String, Failure> {
    let scope = work.scope(extra);
    work.workflows
        .expressions
        .render(template, &scope)
        .map_err(|e| e.to_string())
}

fn render_json(work: &mut Work, template: &JsonTemplate) -> Result<Json, Failure> {
    let mut value = template.value.clone();
    for (pointer, text) in &template.strings {
        let rendered = render(work, text, &[])?;
        if let Some(slot) = value.pointer_mut(pointer) {
            *slot = Json::String(rendered);
        }
    }
    Ok(value)
}

fn set(work: &mut Work, fields: &[(String, FieldValue)]) -> ActionResult {
    let mut values = serde_json::Map::new();
    for (name, value) in fields {
        let v = match value {
            FieldValue::Template(t) => Json::String(render(work, t, &[])?),
            FieldValue::Literal(v) => v.clone(),
        };
        values.insert(name.clone(), v);
    }
    let changed = work.merge_fields(&values);
    if changed.is_empty() {
        return Ok(Done::Skipped("no field changed".to_owned()));
    }
    let detail = format!("changed {}", changed.join(", "));
    work.note_updated(changed);
    Ok(Done::Ok(Some(detail)))
}

pub(super) fn task(work: &mut Work, t: &TaskAction, origin: &Origin) -> ActionResult {
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

fn new_task(
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

fn queue_task(work: &mut Work, task: Task) {
    if let Some(o) = &task.owner {
        *work.open_tasks.entry(o.clone()).or_default() += 1;
    }
    work.raise(
        BuiltinEvent::TaskCreated,
        json!({ "task_id": task.id, "title": task.title, "owner": task.owner, "step": task.step }),
    );
    super::timers::arm_overdue(work, &task);
    work.changes.tasks.push(task);
}

/// The person an assignment picks, or why none could be picked.
fn pick_owner(
    work: &mut Work,
    assignment: &Assignment,
) -> Result<Result<String, Failure>, StoreError> {
    let (team, strategy) = match assignment {
        Assignment::Owner(email) => return Ok(Ok(email.clone())),
        Assignment::Team { team, strategy } => (team, strategy),
    };
    let members = match work.workflows.team.teams.get(team) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => return Ok(Err(format!("team {team} has no members"))),
    };
    let picked = match strategy {
        Strategy::RoundRobin => {
            // The position lives in the store, so turns stay fair across restarts.
            let name = format!("round_robin/{team}");
            let position = work.counter(&name)?;
            work.counters.insert(name, position + 1);
            members[(position % members.len() as u64) as usize].clone()
        }
        Strategy::LeastLoaded => {
            let mut best: Option<(i64, String)> = None;
            for m in &members {
                let load = work.state.open_task_count(m)? as i64
                    + work.open_tasks.get(m).copied().unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| load < *b) {
                    best = Some((load, m.clone()));
                }
            }
            best.map(|(_, m)| m).unwrap_or_default()
        }
    };
    Ok(Ok(picked))
}

fn set_owner(work: &mut Work, owner: String) -> Done {
    if work.record.owner.as_deref() == Some(owner.as_str()) {
        return Done::Skipped(format!("already owned by {owner}"));
    }
    work.record.owner = Some(owner.clone());
    work.touch();
    work.note_updated(vec!["owner".to_owned()]);
    Done::Ok(Some(format!("owner is {owner}")))
}

fn handoff(work: &mut Work, h: &Handoff, origin: &Origin) -> Result<ActionResult, StoreError> {
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
        return Ok(Ok(Done::Refused(format!("missing {}", list.join(", ")))));
    }
    let note = match h.note.as_ref().map(|n| render(work, n, &[])).transpose() {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let title = match &h.task_title {
        Some(t) => match render(work, t, &[]) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        },
        None => format!("Handoff: {} {}", work.record.key.kind, work.record.key.id),
    };
    let receiver = match pick_owner(work, &h.to)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
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
    Ok(Ok(Done::Ok(Some(format!("handed to {receiver}")))))
}

fn emit(work: &mut Work, event_type: &str, data: Option<&JsonTemplate>) -> ActionResult {
    let data = data
        .map(|d| render_json(work, d))
        .transpose()?
        .unwrap_or(json!({}));
    work.emit(event_type, data);
    Ok(Done::Ok(None))
}

/// The unsubscribe link of an outbox row; the Delivery work signs it.
fn unsubscribe_url(work: &Work, outbox_id: &str) -> String {
    unsubscribe_placeholder(work.workflows, outbox_id)
}

/// The unsubscribe link the engine renders into an email. The engine holds
/// no secrets, so delivery replaces it with the signed link (see
/// `delivery::unsubscribe`) right before the email is handed over.
pub fn unsubscribe_placeholder(workflows: &crate::config::Workflows, outbox_id: &str) -> String {
    format!("{}/u/{outbox_id}", workflows.settings.public_base())
}

pub(super) fn email(
    work: &mut Work,
    e: &EmailAction,
    origin: &Origin,
) -> Result<ActionResult, StoreError> {
    let to = match &e.to {
        Some(t) => render(work, t, &[]),
        None => work
            .record
            .fields
            .get("email")
            .and_then(Json::as_str)
            .map(String::from)
            .ok_or_else(|| "the record has no email field".to_owned()),
    };
    let to = match to {
        Ok(to) => to,
        Err(why) => return Ok(Err(why)),
    };
    if work.state.is_suppressed(&to)? {
        return Ok(Ok(Done::Skipped(format!(
            "{to} is unsubscribed or suppressed"
        ))));
    }
    let extra = [(
        "unsubscribe_url",
        Json::String(unsubscribe_url(work, &origin.id)),
    )];
    let message = match message(work, &e.content, &extra) {
        Ok(m) => m,
        Err(why) => return Ok(Err(why)),
    };
    let cc: Result<Vec<String>, Failure> = e.cc.iter().map(|c| render(work, c, &[])).collect();
    let cc = match cc {
        Ok(cc) => cc,
        Err(why) => return Ok(Err(why)),
    };
    let from = work
        .record
        .owner
        .clone()
        .filter(|o| work.workflows.team.people.contains_key(o));
    queue_delivery(
        work,
        origin,
        Delivery::Email {
            to: to.clone(),
            cc,
            from,
            subject: message.0,
            body: message.1,
            format: message.2,
            audience: Audience::Prospect,
            thread: origin.thread.clone(),
            zone: origin.zone.clone(),
        },
    );
    Ok(Ok(Done::Ok(Some(format!("email to {to} queued")))))
}

/// Subject, body and format of a message from a template or inline text.
fn message(
    work: &mut Work,
    content: &EmailContent,
    extra: &[(&str, Json)],
) -> Result<(String, String, BodyFormat), Failure> {
    match content {
        EmailContent::Inline { subject, body } => Ok((
            render(work, subject, extra)?,
            render(work, body, extra)?,
            BodyFormat::Markdown,
        )),
        EmailContent::Template(name) => {
            let template = work
                .workflows
                .templates
                .get(name)
                .ok_or_else(|| format!("template {name} no longer exists"))?;
            let subject = template
                .subject
                .as_ref()
                .map(|s| render(work, s, extra))
                .transpose()?
                .unwrap_or_default();
            let body = render(work, &template.body, extra)?;
            Ok((subject, body, template.format))
        }
    }
}

fn notify(work: &mut Work, n: &NotifyAction, origin: &Origin) -> ActionResult {
    let to = match &n.to {
        NotifyTarget::Person(email) => email.clone(),
        NotifyTarget::Owner => work
            .record
            .owner
            .clone()
            .ok_or("the record has no owner to notify")?,
        NotifyTarget::Manager => {
            let owner = work
                .record
                .owner
                .clone()
                .ok_or("the record has no owner, so no manager")?;
            let person = work
                .workflows
                .team
                .people
                .get(&owner)
                .ok_or(format!("owner {owner} is not in the team"))?;
            person
                .manager
                .clone()
                .ok_or(format!("{owner} has no manager in the team"))?
        }
    };
    let (template_subject, body, format) = match &n.template {
        Some(name) => message(work, &EmailContent::Template(name.clone()), &[])?,
        None => (String::new(), String::new(), BodyFormat::Markdown),
    };
    let subject = match &n.subject {
        Some(s) => render(work, s, &[])?,
        None => template_subject,
    };
    let body = match &n.body {
        Some(b) => render(work, b, &[])?,
        None => body,
    };
    queue_delivery(
        work,
        origin,
        Delivery::Email {
            to: to.clone(),
            cc: Vec::new(),
            from: None,
            subject,
            body,
            format,
            audience: Audience::Team,
            thread: None,
            zone: None,
        },
    );
    Ok(Done::Ok(Some(format!("notice to {to} queued"))))
}

pub(super) fn webhook(work: &mut Work, w: &WebhookAction, origin: &Origin) -> ActionResult {
    let url = render(work, &w.url, &[])?;
    let headers: Result<Vec<(String, String)>, Failure> = w
        .headers
        .iter()
        .map(|(k, v)| render(work, v, &[]).map(|v| (k.clone(), v)))
        .collect();
    let body = match &w.body {
        Some(b) => render_json(work, b)?,
        None => json!({
            "event": context::event_json(work.event),
            "record": context::record_json(&work.record, work.workflows, work.now),
            "rule": origin.rule,
        }),
    };
    queue_delivery(
        work,
        origin,
        Delivery::Webhook {
            url: url.clone(),
            method: w.method.clone(),
            headers: headers?,
            body,
            secret: w.secret.clone(),
        },
    );
    Ok(Done::Ok(Some(format!("webhook to {url} queued"))))
}

fn queue_delivery(work: &mut Work, origin: &Origin, delivery: Delivery) {
    let mut row = OutboxEntry::pending(
        origin.id.clone(),
        work.record.key.clone(),
        delivery,
        work.now,
        origin.rule.clone(),
    );
    row.step = origin.step.clone();
    work.changes.outbox.push(row);
}
