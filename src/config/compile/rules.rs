//! `rules:`: triggers, conditions and actions.

use super::BUILTIN_EVENTS;
use super::actions::{self, ActionSite};
use super::context::{Cx, Scope};
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::suggestion;
use crate::config::loader::SourceSet;
use crate::config::model::{CatchUp, ForEachSpec, Located, RuleSpec, ScheduleSpec, Text, Trigger};
use crate::config::values;
use crate::config::workflows::{Rule, RuleTrigger, Schedule, Settings};

/// Compiles every rule, in file order.
pub fn compile(set: &SourceSet, symbols: &Symbols, settings: &Settings, cx: &mut Cx) -> Vec<Rule> {
    let mut out = Vec::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.rules {
            if let Some(rule) = compile_rule(spec, symbols, settings, cx) {
                out.push(rule);
            }
        }
    }
    out
}

fn compile_rule(
    spec: &RuleSpec,
    symbols: &Symbols,
    settings: &Settings,
    cx: &mut Cx,
) -> Option<Rule> {
    let kind = rule_kind(spec, cx)?;
    let (trigger, scope) = match spec.on.get() {
        Trigger::Schedule(s) => {
            let for_each = spec.for_each.as_ref();
            let scope =
                for_each.map_or_else(Scope::no_record, |f| Scope::record(Some(f.kind.get())));
            let schedule = schedule(s, for_each, &scope, settings, cx);
            (schedule.map(|s| RuleTrigger::Schedule(Box::new(s))), scope)
        }
        other => {
            if let Some(f) = &spec.for_each {
                cx.error(&f.kind, Code::Conflict, "for_each only works with on: {schedule: ...}; an event already names its record");
            }
            let types = event_types(&spec.on, other, cx);
            warn_unhandled_kind(
                &spec.on,
                types.as_deref().unwrap_or(&[]),
                kind.as_deref(),
                symbols,
                cx,
            );
            (
                types.map(RuleTrigger::Events),
                Scope::record(kind.as_deref()),
            )
        }
    };
    let condition = match &spec.condition {
        None => Some(None),
        Some(c) => cx.condition(c, &scope).map(Some),
    };
    if spec.actions.is_empty() {
        cx.error(
            &spec.name,
            Code::Missing,
            format!("rule \"{}\" has no actions; add do: [...]", spec.name.get()),
        );
    }
    let site = ActionSite {
        scope,
        kind: kind.as_deref(),
        owner: "rule",
    };
    let actions = actions::compile_all(&spec.actions, &site, symbols, cx);
    Some(Rule {
        name: spec.name.get().clone(),
        kind: kind.clone(),
        trigger: trigger?,
        condition: condition?,
        actions: actions.filter(|a| !a.is_empty())?,
    })
}

/// The rule's record kind: `for:`, or `for_each.kind` of a schedule rule.
fn rule_kind(spec: &RuleSpec, cx: &mut Cx) -> Option<Option<String>> {
    let given = spec.kind.as_ref().map(|k| k.get().clone());
    match (&spec.kind, &spec.for_each) {
        (Some(k), Some(f)) if k.get() != f.kind.get() => {
            cx.error(
                &f.kind,
                Code::Kind,
                format!(
                    "for_each.kind \"{}\" does not match for: {}",
                    f.kind.get(),
                    k.get()
                ),
            );
            None
        }
        (None, Some(f)) => Some(Some(f.kind.get().clone())),
        _ => Some(given),
    }
}

fn event_types(at: &Located<Trigger>, trigger: &Trigger, cx: &mut Cx) -> Option<Vec<String>> {
    let texts: Vec<Text> = match trigger {
        Trigger::One(t) => vec![Located(serde_saphyr::Spanned {
            value: t.clone(),
            referenced: at.0.referenced,
            defined: at.0.defined,
        })],
        Trigger::Many(list) => list.clone(),
        Trigger::Schedule(_) => Vec::new(),
    };
    if texts.is_empty() {
        cx.error(at, Code::Missing, "on: needs at least one event type");
        return None;
    }
    let mut ok = true;
    for t in &texts {
        ok &= check_event_type(t, cx);
    }
    ok.then(|| texts.iter().map(|t| t.get().clone()).collect())
}

/// Namespaces of built-in events: a type in one of them that is not built
/// in is almost certainly a typo, since nothing else raises it.
const BUILTIN_NAMESPACES: &[&str] = &[
    "record.",
    "stage.",
    "score.",
    "email.",
    "task.",
    "sequence.",
    "handoff.",
    "action.",
];

/// Checks an event type name; warns about a likely misspelt built-in.
pub fn check_event_type(t: &Text, cx: &mut Cx) -> bool {
    let name = t.get();
    if name.trim().is_empty() || name.contains(char::is_whitespace) {
        cx.error(
            t,
            Code::Name,
            "event type must be a word without spaces, e.g. form.submitted",
        );
        return false;
    }
    let builtin_like = BUILTIN_NAMESPACES.iter().any(|ns| name.starts_with(ns));
    if builtin_like
        && !BUILTIN_EVENTS.contains(&name.as_str())
        && name != "email.opened"
        && name != "email.clicked"
    {
        let hint = suggestion(name, BUILTIN_EVENTS.iter().copied());
        cx.warning(t, Code::UnknownEvent, format!("no built-in event is called \"{name}\", so only a sender outside dealflow could raise it{hint}"));
    }
    true
}

/// Warns when a stage event is awaited for a kind with no pipeline.
fn warn_unhandled_kind(
    at: &Located<Trigger>,
    types: &[String],
    kind: Option<&str>,
    symbols: &Symbols,
    cx: &mut Cx,
) {
    let Some(kind) = kind else { return };
    let stage_event = types
        .iter()
        .find(|t| t.starts_with("stage.") && BUILTIN_EVENTS.contains(&t.as_str()));
    if let (Some(t), false) = (stage_event, symbols.pipelines.contains_key(kind)) {
        cx.warning(
            at,
            Code::NoEffect,
            format!("{t} never happens for {kind}: no pipeline is for {kind}"),
        );
    }
}

fn schedule(
    s: &ScheduleSpec,
    for_each: Option<&ForEachSpec>,
    scope: &Scope,
    settings: &Settings,
    cx: &mut Cx,
) -> Option<Schedule> {
    let cron = cx.parsed(&s.schedule, values::parse_cron);
    let timezone = match &s.timezone {
        Some(t) => cx.parsed(t, values::parse_timezone),
        None => Some(settings.timezone),
    };
    let for_each = match for_each {
        None => Some(None),
        Some(f) => {
            let condition = match &f.condition {
                None => Some(None),
                Some(c) => cx.condition(c, scope).map(Some),
            };
            condition.map(|c| Some((f.kind.get().clone(), c)))
        }
    };
    Some(Schedule {
        cron_line: s.schedule.get().clone(),
        cron: cron?,
        timezone: timezone?,
        catch_up: s.catch_up.as_ref().map_or(CatchUp::Latest, |c| *c.get()),
        for_each: for_each?,
    })
}
