//! `do:` actions, shared by rules and thresholds, and the email, task and
//! webhook bodies that sequence steps reuse.

use super::BUILTIN_EVENTS;
use super::context::{Cx, Scope};
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::Position;
use crate::config::expr::Escaping;
use crate::config::model::{
    ActionSpec, AssignSpec, EmailSpec, EmitSpec, HandoffSpec, Located, NotifySpec, SmsSpec,
    Strategy, TaskSpec, Text, WebhookSpec,
};
use crate::config::workflows::{
    Action, Assignment, EmailAction, EmailContent, FieldValue, Handoff, JsonTemplate, NotifyAction,
    NotifyTarget, SmsAction, TaskAction, WebhookAction,
};
use crate::state::KEPT_FIELDS;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// Where actions are compiled: the names in scope and the record kind.
pub struct ActionSite<'s> {
    /// Names expressions may read.
    pub scope: Scope,
    /// The record kind, when known.
    pub kind: Option<&'s str>,
    /// What the actions belong to, for messages ("rule", "threshold").
    pub owner: &'static str,
}

/// Compiles a `do:` list; `None` if any action has an error.
pub fn compile_all(
    list: &[Located<ActionSpec>],
    site: &ActionSite,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<Vec<Action>> {
    let compiled: Vec<Option<Action>> =
        list.iter().map(|a| compile(a, site, symbols, cx)).collect();
    compiled.into_iter().collect()
}

fn compile(
    action: &Located<ActionSpec>,
    site: &ActionSite,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<Action> {
    let without_record = needs_record(action.get()).filter(|_| !site.scope.has_record());
    if let Some(why) = without_record {
        cx.error(
            action, Code::Conflict,
            format!("{why} needs a record, but a schedule rule without for_each has none; add for_each: {{kind: ...}}"),
        );
        return None;
    }
    let scope = &site.scope;
    match action.get() {
        ActionSpec::Email(e) => {
            if let Some(thread) = &e.thread {
                cx.error(
                    thread,
                    Code::Conflict,
                    "thread only works in sequence steps, where it names an earlier email step",
                );
                return None;
            }
            email(cx.at(action), e, scope, symbols, cx).map(Action::Email)
        }
        ActionSpec::Notify(n) => notify(action, n, scope, symbols, cx).map(Action::Notify),
        ActionSpec::Webhook(w) => webhook(w, scope, symbols, cx).map(Action::Webhook),
        ActionSpec::Task(t) => task(t, scope, symbols, cx).map(Action::Task),
        ActionSpec::Set(fields) => set(action, fields, scope, cx).map(Action::Set),
        ActionSpec::Move(stage) => {
            move_to(stage, site, symbols, cx).then(|| Action::Move(stage.get().clone()))
        }
        ActionSpec::Assign(a) => assign(action, a, symbols, cx).map(Action::Assign),
        ActionSpec::Handoff(h) => handoff(h, scope, symbols, cx).map(Action::Handoff),
        ActionSpec::Enroll(name) => {
            enroll(name, site, symbols, cx).then(|| Action::Enroll(name.get().clone()))
        }
        ActionSpec::Unenroll(name) if name.get() == "all" => Some(Action::Unenroll(None)),
        ActionSpec::Unenroll(name) => symbols
            .sequence(cx, name)
            .then(|| Action::Unenroll(Some(name.get().clone()))),
        ActionSpec::Score(s) => {
            let model_ok = symbols.check(cx, "scoring model", &s.model, symbols.models.keys());
            let kind_ok = model_ok
                && same_kind(
                    cx,
                    &s.model,
                    "scoring model",
                    symbols.models.get(s.model.get()).map(String::as_str),
                    site,
                );
            let points_ok = finite(cx, &s.points, "points");
            (kind_ok && points_ok).then(|| Action::Score {
                model: s.model.get().clone(),
                points: *s.points.get(),
            })
        }
        ActionSpec::Emit(e) => emit(e, scope, cx),
        ActionSpec::Sms(t) => sms(t, scope, symbols, cx).map(Action::Sms),
    }
}

/// Which action needs a record in scope, if this one does.
fn needs_record(action: &ActionSpec) -> Option<&'static str> {
    match action {
        ActionSpec::Email(_) => Some("email"),
        ActionSpec::Set(_) => Some("set"),
        ActionSpec::Move(_) => Some("move"),
        ActionSpec::Assign(_) => Some("assign"),
        ActionSpec::Handoff(_) => Some("handoff"),
        ActionSpec::Enroll(_) => Some("enroll"),
        ActionSpec::Unenroll(_) => Some("unenroll"),
        ActionSpec::Score(_) => Some("score"),
        ActionSpec::Emit(_) => Some("emit"),
        ActionSpec::Sms(t) if t.to.is_none() => Some("sms without to"),
        ActionSpec::Task(t) if t.owner.is_none() => Some("task without owner"),
        ActionSpec::Notify(n) if matches!(n.to.get().as_str(), "owner" | "manager") => {
            Some("notify to owner or manager")
        }
        _ => None,
    }
}

/// Checks that a referenced thing is for the same record kind as the site.
fn same_kind(
    cx: &mut Cx,
    name: &Text,
    what: &str,
    its_kind: Option<&str>,
    site: &ActionSite,
) -> bool {
    match (its_kind, site.kind) {
        (Some(theirs), Some(ours)) if theirs != ours => {
            cx.error(
                name,
                Code::Kind,
                format!(
                    "{what} \"{}\" is for {theirs}, but this {} is for {ours}",
                    name.get(),
                    site.owner
                ),
            );
            false
        }
        _ => true,
    }
}

/// Checks that a number is finite and of a sane size.
pub fn finite(cx: &mut Cx, value: &Located<f64>, what: &str) -> bool {
    if value.get().is_finite() && value.get().abs() < 1e12 {
        return true;
    }
    cx.error(
        value,
        Code::Value,
        format!("{what} must be a finite number below 1e12"),
    );
    false
}

/// Compiles an optional text template.
fn optional(
    cx: &mut Cx,
    text: &Option<Text>,
    scope: &Scope,
) -> Option<Option<crate::config::expr::TextTemplate>> {
    match text {
        None => Some(None),
        Some(t) => cx.template(t, scope, Escaping::None).map(Some),
    }
}

fn email_scope(scope: &Scope) -> Scope {
    scope.clone().with(["unsubscribe_url".to_owned()])
}

/// Compiles an email (action or step); `thread` is checked by the caller.
pub fn email(
    at: Position,
    e: &EmailSpec,
    scope: &Scope,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<EmailAction> {
    if e.template.is_none() && e.subject.is_none() && e.body.is_none() {
        cx.error_at(
            at,
            Code::Missing,
            "an email needs a template, or a subject and a body",
        );
        return None;
    }
    let content = email_content(
        e.template.as_ref(),
        e.subject.as_ref(),
        e.body.as_ref(),
        scope,
        symbols,
        cx,
        EmailNeeds::Subject,
    )?;
    let to = optional(cx, &e.to, scope)?;
    let cc: Option<Vec<_>> =
        e.cc.iter()
            .map(|c| cx.template(c, scope, Escaping::None))
            .collect();
    Some(EmailAction {
        content,
        to,
        cc: cc?,
        thread: e.thread.as_ref().map(|t| t.get().clone()),
    })
}

/// Whether a message must have a subject from somewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EmailNeeds {
    Subject,
    BodyOnly,
}

fn email_content(
    template: Option<&Text>,
    subject: Option<&Text>,
    body: Option<&Text>,
    scope: &Scope,
    symbols: &Symbols,
    cx: &mut Cx,
    needs: EmailNeeds,
) -> Option<EmailContent> {
    match (template, subject, body) {
        (Some(t), _, Some(b)) => {
            cx.error(
                b,
                Code::Conflict,
                format!(
                    "give either template or body, not both (template \"{}\")",
                    t.get()
                ),
            );
            None
        }
        (Some(t), _, None) => {
            if !symbols.template(cx, t) {
                return None;
            }
            if needs == EmailNeeds::Subject
                && subject.is_none()
                && !symbols.templates_with_subject.contains(t.get())
            {
                cx.error(t, Code::Missing, format!("template \"{}\" has no subject in its front matter; add one or give subject here", t.get()));
                return None;
            }
            Some(EmailContent::Template(t.get().clone()))
        }
        (None, Some(s), Some(b)) => Some(EmailContent::Inline {
            subject: cx.template(s, scope, Escaping::None)?,
            body: cx.template(b, &email_scope(scope), Escaping::Html)?,
        }),
        (None, Some(s), None) => {
            cx.error(
                s,
                Code::Missing,
                "an email needs a body or a template besides its subject",
            );
            None
        }
        (None, None, Some(b)) => {
            cx.error(
                b,
                Code::Missing,
                "an email needs a subject besides its body (or use a template)",
            );
            None
        }
        // Callers refuse an email with none of the three before coming here.
        (None, None, None) => None,
    }
}

fn notify(
    at: &Located<ActionSpec>,
    n: &NotifySpec,
    scope: &Scope,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<NotifyAction> {
    let to = match n.to.get().as_str() {
        "owner" => NotifyTarget::Owner,
        "manager" => NotifyTarget::Manager,
        _ => {
            let special = ["owner".to_owned(), "manager".to_owned()];
            if !symbols.check(cx, "person", &n.to, symbols.people.iter().chain(&special)) {
                return None;
            }
            NotifyTarget::Person(n.to.get().clone())
        }
    };
    if n.template.is_none() && n.body.is_none() && n.subject.is_none() {
        cx.error(
            at,
            Code::Missing,
            "notify needs a subject, a template or a body",
        );
        return None;
    }
    if !symbols.email_from && !symbols.incomplete {
        cx.error(
            at, Code::Missing,
            "notify sends from settings.email.from, which is not set; add settings: { email: { from: \"Acme Sales <sales@acme.example>\" } }",
        );
        return None;
    }
    if let Some(t) = &n.template {
        email_content(
            Some(t),
            n.subject.as_ref(),
            None,
            scope,
            symbols,
            cx,
            EmailNeeds::BodyOnly,
        )?;
    }
    Some(NotifyAction {
        to,
        subject: optional(cx, &n.subject, scope)?,
        template: n.template.as_ref().map(|t| t.get().clone()),
        body: optional(cx, &n.body, scope)?,
    })
}

/// `scheme://host:port/` of a URL template whose host is written out (no
/// `{{` before the path), for checks that need no rendering.
fn static_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    (!authority.contains("{{")).then(|| format!("{scheme}://{authority}/"))
}

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Compiles a webhook (action or step).
pub fn webhook(
    w: &WebhookSpec,
    scope: &Scope,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<WebhookAction> {
    let url = cx.template(&w.url, scope, Escaping::None);
    let url_shape = w.url.get().starts_with("http://")
        || w.url.get().starts_with("https://")
        || w.url.get().starts_with("{{");
    if !url_shape {
        cx.error(
            &w.url,
            Code::Value,
            "webhook url must start with http:// or https://",
        );
    }
    if let Some(why) = static_host(w.url.get()).and_then(|base| {
        crate::config::webhook_hosts::refused_without_dns(&base, &symbols.webhook_allow_hosts)
    }) {
        cx.warning(
            &w.url,
            Code::NoEffect,
            format!("every call will fail: {why}"),
        );
    }
    let method = match &w.method {
        None => Some("POST".to_owned()),
        Some(m) => {
            let upper = m.get().to_uppercase();
            if HTTP_METHODS.contains(&upper.as_str()) {
                Some(upper)
            } else {
                cx.error(
                    m,
                    Code::Value,
                    format!(
                        "unknown HTTP method \"{}\"; use one of {}",
                        m.get(),
                        HTTP_METHODS.join(", ")
                    ),
                );
                None
            }
        }
    };
    let headers: Option<Vec<_>> = w
        .headers
        .iter()
        .map(|(k, v)| {
            cx.template(v, scope, Escaping::None)
                .map(|t| (k.clone(), t))
        })
        .collect();
    let body = match &w.body {
        None => Some(None),
        Some(b) => json_template(b, scope, cx).map(Some),
    };
    if let Some(secret) = w.secret.as_ref().filter(|s| s.get().is_empty()) {
        cx.error(
            secret,
            Code::Env,
            "secret is empty; is its environment variable set?",
        );
    }
    Some(WebhookAction {
        url: url?,
        method: method?,
        headers: headers?,
        body: body?,
        secret: w
            .secret
            .as_ref()
            .map(|s| s.get().clone())
            .filter(|_| url_shape),
    })
}

/// Compiles the string leaves of a JSON value as templates.
pub(super) fn json_template(
    value: &Located<Json>,
    scope: &Scope,
    cx: &mut Cx,
) -> Option<JsonTemplate> {
    let mut strings = BTreeMap::new();
    let mut ok = true;
    let mut leaves = Vec::new();
    string_leaves(value.get(), String::new(), &mut leaves);
    for (pointer, text) in leaves {
        let located = relocate(value, text);
        match cx.template(&located, scope, Escaping::None) {
            Some(t) => {
                strings.insert(pointer, t);
            }
            None => ok = false,
        }
    }
    ok.then(|| JsonTemplate {
        value: value.get().clone(),
        strings,
    })
}

/// A text at the position of `at` (nested JSON values carry no positions).
pub(super) fn relocate(at: &Located<Json>, text: String) -> Text {
    Located(serde_saphyr::Spanned {
        value: text,
        referenced: at.0.referenced,
        defined: at.0.defined,
    })
}

fn string_leaves(value: &Json, pointer: String, out: &mut Vec<(String, String)>) {
    match value {
        Json::String(s) if s.contains("{{") || s.contains("{%") => out.push((pointer, s.clone())),
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                string_leaves(v, format!("{pointer}/{i}"), out);
            }
        }
        Json::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                string_leaves(v, format!("{pointer}/{key}"), out);
            }
        }
        _ => {}
    }
}

/// Compiles a task (action or step).
/// `sms:` (action or step): needs `settings.sms`; a literal number must be
/// E.164, and a literal body's segments are shown, since carriers bill and
/// split by them.
pub fn sms(t: &SmsSpec, scope: &Scope, symbols: &Symbols, cx: &mut Cx) -> Option<SmsAction> {
    if !symbols.sms {
        cx.error(
            &t.body,
            Code::Missing,
            "sms needs a provider: add settings.sms (provider, account, token, from)",
        );
        return None;
    }
    let literal = |text: &Text| !text.get().contains("{{") && !text.get().contains("{%");
    if let Some(to) = t.to.as_ref().filter(|to| literal(to))
        && let Err(why) = crate::state::phone::e164(to.get())
    {
        cx.error(to, Code::Value, why);
        return None;
    }
    if literal(&t.body) {
        if let Some(why) = crate::state::phone::body_problem(t.body.get()) {
            cx.error(&t.body, Code::Value, why);
            return None;
        }
        let (encoding, count) = crate::state::phone::segments(t.body.get());
        if count > 1 {
            cx.warning(
                &t.body, Code::LongText,
                format!("this text is {count} segments ({encoding}); carriers bill and may deliver each separately"),
            );
        }
    }
    let to = optional(cx, &t.to, scope)?;
    let body = cx.template(&t.body, scope, Escaping::None)?;
    Some(SmsAction { to, body })
}

pub fn task(t: &TaskSpec, scope: &Scope, symbols: &Symbols, cx: &mut Cx) -> Option<TaskAction> {
    if let Some(owner) = &t.owner {
        let literal = !owner.get().contains("{{");
        if literal && !symbols.check(cx, "person", owner, &symbols.people) {
            return None;
        }
    }
    let due = match &t.due {
        None => Some(None),
        Some(d) => cx.duration(d).map(Some),
    };
    Some(TaskAction {
        title: cx.template(&t.title, scope, Escaping::None)?,
        owner: optional(cx, &t.owner, scope)?,
        due: due?,
        notes: optional(cx, &t.notes, scope)?,
    })
}

fn set(
    at: &Located<ActionSpec>,
    fields: &BTreeMap<String, Located<Json>>,
    scope: &Scope,
    cx: &mut Cx,
) -> Option<Vec<(String, FieldValue)>> {
    if fields.is_empty() {
        cx.error(at, Code::Missing, "set needs at least one field: value");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in fields {
        if KEPT_FIELDS.contains(&name.as_str()) {
            cx.error(value, Code::Name, format!("\"{name}\" is kept by dealflow and cannot be set; use move for stages and score for scores"));
            ok = false;
            continue;
        }
        let compiled = match value.get() {
            Json::String(s) => {
                let text = relocate(value, s.clone());
                cx.template(&text, scope, Escaping::None)
                    .map(FieldValue::Template)
            }
            other => Some(FieldValue::Literal(other.clone())),
        };
        match compiled {
            Some(v) => out.push((name.clone(), v)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn move_to(stage: &Text, site: &ActionSite, symbols: &Symbols, cx: &mut Cx) -> bool {
    match site.kind {
        Some(kind) => match symbols.pipelines.get(kind) {
            Some((pipeline, stages)) => {
                let found = stages.iter().any(|s| s == stage.get());
                if !found {
                    let hint = crate::config::diagnostic::suggestion(
                        stage.get(),
                        stages.iter().map(String::as_str),
                    );
                    symbols.missing(
                        cx,
                        stage,
                        format!(
                            "stage \"{}\" is not in pipeline \"{pipeline}\" of {kind}{hint}",
                            stage.get()
                        ),
                    );
                }
                found
            }
            None => {
                symbols.missing(
                    cx,
                    stage,
                    format!("no pipeline is for {kind}, so its records have no stages to move to"),
                );
                false
            }
        },
        None => {
            cx.error(stage, Code::Kind, format!("move needs the {} to say which record kind it is for (for: KIND), so the stage can be checked", site.owner));
            false
        }
    }
}

fn assign(
    at: &Located<ActionSpec>,
    a: &AssignSpec,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<Assignment> {
    match (&a.team, &a.owner) {
        (Some(team), None) => {
            symbols
                .check(cx, "team", team, &symbols.teams)
                .then(|| Assignment::Team {
                    team: team.get().clone(),
                    strategy: a
                        .strategy
                        .as_ref()
                        .map_or(Strategy::RoundRobin, |s| *s.get()),
                })
        }
        (None, Some(owner)) => {
            if let Some(s) = &a.strategy {
                cx.error(
                    s,
                    Code::Conflict,
                    "strategy only applies when assigning to a team",
                );
                return None;
            }
            symbols
                .check(cx, "person", owner, &symbols.people)
                .then(|| Assignment::Owner(owner.get().clone()))
        }
        _ => {
            cx.error(
                at,
                Code::Conflict,
                "assign needs either team (with an optional strategy) or owner, not both",
            );
            None
        }
    }
}

fn handoff(h: &HandoffSpec, scope: &Scope, symbols: &Symbols, cx: &mut Cx) -> Option<Handoff> {
    let to = if symbols.teams.contains(h.to.get()) {
        Assignment::Team {
            team: h.to.get().clone(),
            strategy: h
                .strategy
                .as_ref()
                .map_or(Strategy::RoundRobin, |s| *s.get()),
        }
    } else {
        let targets = symbols.teams.iter().chain(&symbols.people);
        if !symbols.check(cx, "team or person", &h.to, targets) {
            return None;
        }
        Assignment::Owner(h.to.get().clone())
    };
    Some(Handoff {
        to,
        require: h.require.iter().map(|r| r.get().clone()).collect(),
        note: optional(cx, &h.note, scope)?,
        task_title: optional(cx, &h.task, scope)?,
    })
}

fn enroll(name: &Text, site: &ActionSite, symbols: &Symbols, cx: &mut Cx) -> bool {
    if !symbols.sequence(cx, name) {
        return false;
    }
    let kind = symbols.sequences.get(name.get()).cloned().flatten();
    same_kind(cx, name, "sequence", kind.as_deref(), site)
}

fn emit(e: &EmitSpec, scope: &Scope, cx: &mut Cx) -> Option<Action> {
    let t = e.event_type.get();
    if BUILTIN_EVENTS.contains(&t.as_str()) {
        cx.error(&e.event_type, Code::Name, format!("\"{t}\" is raised by dealflow itself; emit raises custom events such as meeting.requested"));
        return None;
    }
    if t.trim().is_empty() || t.contains(char::is_whitespace) {
        cx.error(
            &e.event_type,
            Code::Name,
            "event type must be a word without spaces, e.g. meeting.requested",
        );
        return None;
    }
    let data = match &e.data {
        None => None,
        Some(d) => Some(json_template(d, scope, cx)?),
    };
    Some(Action::Emit {
        event_type: t.clone(),
        data,
    })
}
