//! `tests:`: workflow test cases for `dealflow test`.

use super::BUILTIN_EVENTS;
use super::context::Cx;
use super::rules::check_event_type;
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::suggestion;
use crate::config::loader::SourceSet;
use crate::config::model::{Located, TestEventSpec, TestSpec, Text};
use crate::config::workflows::{Source, TestEvent, TestInput, WorkflowTest};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Timeline entries a test can expect besides the built-in events.
const DELIVERY_ENTRIES: &[&str] = &["email", "notify", "webhook", "sms", "task"];

/// The fields each send or task entry of the timeline has (see
/// `simulation::timeline`): a field outside these would never match, so an
/// `expect_not` with a typo would pass forever.
const ENTRY_FIELDS: &[(&str, &[&str])] = &[
    (
        "email",
        &[
            "to", "cc", "subject", "thread", "rule", "step", "record", "fails",
        ],
    ),
    (
        "notify",
        &[
            "to", "cc", "subject", "thread", "rule", "step", "record", "fails",
        ],
    ),
    (
        "webhook",
        &["url", "method", "rule", "step", "record", "fails"],
    ),
    ("sms", &["to", "body", "rule", "step", "record", "fails"]),
    (
        "task",
        &["title", "owner", "step", "rule", "record", "due_at"],
    ),
];

/// How long a test's clock runs when it gives no `until`.
const DEFAULT_UNTIL: Duration = Duration::from_secs(30 * 86_400);

/// Compiles every workflow test.
pub fn compile(
    set: &SourceSet,
    symbols: &Symbols,
    sources: &BTreeMap<String, Source>,
    cx: &mut Cx,
) -> Vec<WorkflowTest> {
    let mut out = Vec::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.tests {
            out.extend(compile_test(spec, symbols, sources, cx));
        }
    }
    out
}

fn compile_test(
    spec: &TestSpec,
    symbols: &Symbols,
    sources: &BTreeMap<String, Source>,
    cx: &mut Cx,
) -> Option<WorkflowTest> {
    let start = cx.parsed(&spec.start, |s| {
        chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
            format!(
                "invalid start \"{s}\"; write an RFC 3339 time such as 2026-03-02T08:00:00-05:00"
            )
        })
    });
    let until = match &spec.until {
        None => Some(DEFAULT_UNTIL),
        Some(u) => cx.positive_duration(u, "until"),
    };
    if spec.events.is_empty() {
        cx.error(
            &spec.name,
            Code::Test,
            format!("test \"{}\" has no events", spec.name.get()),
        );
    }
    let events: Vec<Option<TestInput>> = spec
        .events
        .iter()
        .map(|e| compile_input(e, symbols, sources, cx))
        .collect();
    let expect = expectations(&spec.expect, cx);
    let expect_not = expectations(&spec.expect_not, cx);
    Some(WorkflowTest {
        name: spec.name.get().clone(),
        start: start?,
        events: events.into_iter().collect::<Option<Vec<_>>>()?,
        until: until?,
        expect: expect?,
        expect_not: expect_not?,
    })
}

/// An event, or a payload posted to a source.
fn compile_input(
    at: &Located<TestEventSpec>,
    symbols: &Symbols,
    sources: &BTreeMap<String, Source>,
    cx: &mut Cx,
) -> Option<TestInput> {
    let e = at.get();
    let offset = match &e.at {
        None => Some(Duration::ZERO),
        Some(t) => cx.parsed(t, crate::config::values::parse_offset),
    };
    match (&e.source, &e.payload, &e.event_type, &e.record) {
        (Some(source), Some(payload), None, None) if e.id.is_none() && e.data.is_empty() => {
            let known = sources.contains_key(source.get());
            if !known && !symbols.incomplete {
                let hint = suggestion(source.get(), sources.keys().map(String::as_str));
                cx.error(
                    source,
                    Code::UnknownName,
                    format!("no source is called \"{}\"{hint}", source.get()),
                );
            }
            Some(TestInput::Payload {
                at: offset?,
                source: source.get().clone(),
                payload: payload.get().clone(),
                headers: e.headers.clone(),
            })
            .filter(|_| known)
        }
        (None, None, Some(event_type), Some(record)) if e.headers.is_empty() => {
            compile_event(e, event_type, record, offset, symbols, cx).map(TestInput::Event)
        }
        _ => {
            cx.error(
                at, Code::Test,
                "a test event is either { type, record, data } or { source, payload } (a payload posted to a source)",
            );
            None
        }
    }
}

fn compile_event(
    e: &TestEventSpec,
    event_type: &Text,
    record: &crate::config::model::RecordRefSpec,
    offset: Option<Duration>,
    symbols: &Symbols,
    cx: &mut Cx,
) -> Option<TestEvent> {
    let type_ok = check_event_type(event_type, cx);
    let kind = &record.kind;
    // As at the API: names become store keys, which NUL separates.
    let names = [
        kind.get().as_str(),
        record.id.as_str(),
        event_type.get().as_str(),
    ];
    if names.iter().any(|n| n.chars().any(char::is_control)) {
        cx.error(
            event_type,
            Code::Name,
            "kinds, ids and event types are printable text (no control characters)",
        );
        return None;
    }
    if !symbols.incomplete && !symbols.kinds.contains(kind.get()) {
        let hint = suggestion(kind.get(), symbols.kinds.iter().map(String::as_str));
        cx.warning(
            kind, Code::UnknownName,
            format!(
                "no workflow names kind \"{}\" (in `for:`), so only rules without `for:` see this event{hint}",
                kind.get()
            ),
        );
    }
    Some(TestEvent {
        at: offset?,
        id: e.id.clone(),
        event_type: event_type.get().clone(),
        kind: kind.get().clone(),
        record_id: record.id.clone(),
        fields: record.fields.clone(),
        data: e.data.clone(),
    })
    .filter(|_| type_ok)
}

/// A field a send or task entry never has, named with the ones it has.
fn unknown_field(kind: &str, fields: &Json) -> Option<String> {
    let (_, known) = ENTRY_FIELDS.iter().find(|(k, _)| *k == kind)?;
    let name = fields
        .as_object()?
        .keys()
        .find(|f| !known.contains(&f.as_str()))?;
    let hint = suggestion(name, known.iter().copied());
    Some(if hint.is_empty() {
        format!(
            "\"{kind}\" entries have no field \"{name}\"; they have: {}",
            known.join(", ")
        )
    } else {
        format!("\"{kind}\" entries have no field \"{name}\"{hint}")
    })
}

fn expectations(
    list: &[Located<BTreeMap<String, Json>>],
    cx: &mut Cx,
) -> Option<Vec<(String, Json)>> {
    let known = || BUILTIN_EVENTS.iter().chain(DELIVERY_ENTRIES).copied();
    let mut out = Vec::new();
    let mut ok = true;
    for item in list {
        let mut entries = item.get().iter();
        let (Some((kind, fields)), None) = (entries.next(), entries.next()) else {
            cx.error(
                item,
                Code::Test,
                "each expectation names one timeline entry, e.g. { email: { step: intro } }",
            );
            ok = false;
            continue;
        };
        if !known().any(|k| k == kind) {
            let at: Text = Located(serde_saphyr::Spanned::new(
                kind.clone(),
                item.0.referenced,
                item.0.defined,
            ));
            cx.error(
                &at,
                Code::Test,
                format!(
                    "unknown timeline entry \"{kind}\"{}",
                    suggestion(kind, known())
                ),
            );
            ok = false;
            continue;
        }
        if !(fields.is_object() || fields.is_null()) {
            cx.error(
                item,
                Code::Test,
                format!("the fields to match under \"{kind}\" must be a mapping"),
            );
            ok = false;
            continue;
        }
        if let Some(unknown) = unknown_field(kind, fields) {
            cx.error(item, Code::Test, unknown);
            ok = false;
            continue;
        }
        out.push((kind.clone(), fields.clone()));
    }
    ok.then_some(out)
}
