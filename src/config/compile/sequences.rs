//! `sequences:`: steps, exits, send windows.

use super::actions;
use super::context::{Cx, Scope};
use super::rules::check_event_type;
use super::settings::compile_calendar;
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::Position;
use crate::config::expr::Escaping;
use crate::config::loader::SourceSet;
use crate::config::model::{Located, NameOr, SequenceSpec, StepSpec};
use crate::config::workflows::{Calendar, Sequence, Step, StepKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Exit events when a sequence gives none (SPEC §3.6).
pub const DEFAULT_EXIT_ON: [&str; 5] = [
    "email.replied",
    "email.unsubscribed",
    "email.bounced",
    "sms.replied",
    "sms.opted_out",
];

/// Compiles every sequence, by name.
pub fn compile(
    set: &SourceSet,
    symbols: &Symbols,
    calendars: &BTreeMap<String, Arc<Calendar>>,
    cx: &mut Cx,
) -> BTreeMap<String, Sequence> {
    let mut out = BTreeMap::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.sequences {
            if let Some(seq) = compile_sequence(spec, symbols, calendars, cx) {
                out.entry(seq.name.clone()).or_insert(seq);
            }
        }
    }
    out
}

fn compile_sequence(
    spec: &SequenceSpec,
    symbols: &Symbols,
    calendars: &BTreeMap<String, Arc<Calendar>>,
    cx: &mut Cx,
) -> Option<Sequence> {
    let kind = spec.kind.as_ref().map(|k| k.get().clone());
    let scope = Scope::record(kind.as_deref());
    let exit_on = match &spec.exit_on {
        None => Some(DEFAULT_EXIT_ON.map(String::from).to_vec()),
        Some(list) => {
            let ok = list.iter().filter(|t| !check_event_type(t, cx)).count() == 0;
            ok.then(|| list.iter().map(|t| t.get().clone()).collect())
        }
    };
    let reenroll = match &spec.reenroll {
        None => Some(None),
        Some(r) if r.get() == "never" => Some(None),
        Some(r) => cx.positive_duration(r, "reenroll").map(Some),
    };
    let send_window = match spec.send_window.as_ref().map(|w| (w, w.get())) {
        None => Some(None),
        Some((at, NameOr::Name(name))) => {
            let named = Located(serde_saphyr::Spanned::new(
                name.clone(),
                at.0.referenced,
                at.0.defined,
            ));
            if symbols.check(cx, "calendar", &named, &symbols.calendars) {
                calendars.get(name).cloned().map(Some)
            } else {
                None
            }
        }
        Some((_, NameOr::Inline(c))) => compile_calendar(c, cx).map(|c| Some(Arc::new(c))),
    };
    let recipient_timezone = match &spec.recipient_timezone {
        None => Some(None),
        Some(t) => cx.template(t, &scope, Escaping::None).map(Some),
    };
    if spec.steps.is_empty() {
        cx.error(
            &spec.name,
            Code::Missing,
            format!("sequence \"{}\" has no steps", spec.name.get()),
        );
        return None;
    }
    let mut ids = StepIds::default();
    ids.collect(&spec.steps);
    let steps = compile_steps(&spec.steps, &scope, symbols, &mut ids, cx);
    ids.check_renames(cx);
    Some(Sequence {
        name: spec.name.get().clone(),
        kind,
        exit_on: exit_on?,
        reenroll: reenroll?,
        send_window: send_window?,
        recipient_timezone: recipient_timezone?,
        on_step_removed: spec.on_step_removed.as_ref().map(|o| *o.get()),
        steps: steps?,
    })
}

/// Step ids of one sequence, in order, for uniqueness and `thread:` checks.
#[derive(Default)]
struct StepIds {
    all: BTreeSet<String>,
    emails_seen: BTreeSet<String>,
    renames: Vec<Located<String>>,
}

impl StepIds {
    fn collect(&mut self, steps: &[Located<StepSpec>]) {
        for s in steps {
            let step = s.get();
            self.all.extend(step.id.as_ref().map(|i| i.get().clone()));
            self.renames.extend(step.renamed_from.clone());
            self.collect(&step.then);
            self.collect(&step.otherwise);
        }
    }

    fn check_renames(&self, cx: &mut Cx) {
        for old in &self.renames {
            if self.all.contains(old.get()) {
                cx.error(
                    old,
                    Code::Conflict,
                    format!(
                        "renamed_from \"{}\" names a step that still exists",
                        old.get()
                    ),
                );
            }
        }
    }
}

fn compile_steps(
    steps: &[Located<StepSpec>],
    scope: &Scope,
    symbols: &Symbols,
    ids: &mut StepIds,
    cx: &mut Cx,
) -> Option<Vec<Step>> {
    let mut seen = BTreeSet::new();
    let compiled: Vec<Option<Step>> = steps
        .iter()
        .map(|s| compile_step(s, scope, symbols, ids, &mut seen, cx))
        .collect();
    compiled.into_iter().collect()
}

fn compile_step(
    at: &Located<StepSpec>,
    scope: &Scope,
    symbols: &Symbols,
    ids: &mut StepIds,
    seen: &mut BTreeSet<String>,
    cx: &mut Cx,
) -> Option<Step> {
    let s = at.get();
    let kinds = [
        ("email", s.email.is_some()),
        ("task", s.task.is_some()),
        ("webhook", s.webhook.is_some()),
        ("sms", s.sms.is_some()),
        ("wait", s.wait.is_some()),
        ("exit", s.exit.is_some()),
        ("if", s.condition.is_some()),
    ];
    let present: Vec<&str> = kinds.iter().filter(|(_, p)| *p).map(|(k, _)| *k).collect();
    match present.as_slice() {
        [] => {
            cx.error(
                at,
                Code::Missing,
                "a step needs one of email, task, webhook, sms, wait, exit or if",
            );
            return None;
        }
        [_] => {}
        many => {
            cx.error(
                at,
                Code::Conflict,
                format!(
                    "a step does one thing, but this one has {}; split it into several steps",
                    many.join(" and ")
                ),
            );
            return None;
        }
    }
    let needs_id = s.wait.is_none() && s.exit.is_none();
    match &s.id {
        None if needs_id => {
            cx.error(
                at,
                Code::Missing,
                format!(
                    "this {} step needs an id, so enrollments can follow it across reloads",
                    present[0]
                ),
            );
            return None;
        }
        Some(id) if id.get().trim().is_empty() => {
            cx.error(id, Code::Name, "step id is empty");
            return None;
        }
        Some(id) if !seen.insert(id.get().clone()) => {
            cx.error(
                id,
                Code::Duplicate,
                format!("step id \"{}\" is used twice in this sequence", id.get()),
            );
            return None;
        }
        _ => {}
    }
    if s.condition.is_none() && !(s.then.is_empty() && s.otherwise.is_empty()) {
        cx.error(at, Code::Conflict, "then and else only work with if");
        return None;
    }
    let kind = step_kind(cx.at(at), s, scope, symbols, ids, seen, cx)?;
    if let (StepKind::Email(_), Some(id)) = (&kind, &s.id) {
        ids.emails_seen.insert(id.get().clone());
    }
    Some(Step {
        id: s.id.as_ref().map(|i| i.get().clone()),
        renamed_from: s.renamed_from.as_ref().map(|r| r.get().clone()),
        kind,
    })
}

fn step_kind(
    at: Position,
    s: &StepSpec,
    scope: &Scope,
    symbols: &Symbols,
    ids: &mut StepIds,
    seen: &mut BTreeSet<String>,
    cx: &mut Cx,
) -> Option<StepKind> {
    if let Some(e) = &s.email {
        let unknown_thread = e
            .thread
            .as_ref()
            .filter(|t| !ids.emails_seen.contains(t.get()));
        if let Some(thread) = unknown_thread {
            let hint = crate::config::diagnostic::suggestion(
                thread.get(),
                ids.emails_seen.iter().map(String::as_str),
            );
            cx.error(
                thread,
                Code::UnknownName,
                format!(
                    "thread \"{}\" must name an earlier email step of this sequence{hint}",
                    thread.get()
                ),
            );
            return None;
        }
        return actions::email(at, e, scope, symbols, cx).map(StepKind::Email);
    }
    if let Some(t) = &s.task {
        return actions::task(t, scope, symbols, cx).map(StepKind::Task);
    }
    if let Some(w) = &s.webhook {
        return actions::webhook(w, scope, symbols, cx).map(StepKind::Webhook);
    }
    if let Some(t) = &s.sms {
        return actions::sms(t, scope, symbols, cx).map(StepKind::Sms);
    }
    if let Some(w) = &s.wait {
        return cx.positive_duration(w, "wait").map(StepKind::Wait);
    }
    if let Some(reason) = &s.exit {
        return Some(StepKind::Exit(reason.get().clone()));
    }
    let condition_text = s.condition.as_ref()?;
    let condition = cx.condition(condition_text, scope);
    if s.then.is_empty() && s.otherwise.is_empty() {
        cx.error(
            condition_text,
            Code::Missing,
            "if needs then: [...] or else: [...]",
        );
        return None;
    }
    let mut branch =
        |list: &[Located<StepSpec>], ids: &mut StepIds, cx: &mut Cx| -> Option<Vec<Step>> {
            let compiled: Vec<Option<Step>> = list
                .iter()
                .map(|st| compile_step(st, scope, symbols, ids, seen, cx))
                .collect();
            compiled.into_iter().collect()
        };
    let then = branch(&s.then, ids, cx);
    let otherwise = branch(&s.otherwise, ids, cx);
    Some(StepKind::Branch {
        condition: condition?,
        then: then?,
        otherwise: otherwise?,
    })
}
