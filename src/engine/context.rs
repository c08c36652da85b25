//! What expressions and templates see: `record` (and `KIND`), `event`,
//! `owner`, `now` (SPEC §3.1, §7).

use crate::config::Workflows;
use crate::state::{Event, Record};
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Value;
use serde_json::{Map, Value as Json};

/// The record as expressions see it: user fields and kept fields in one
/// namespace.
pub fn record_json(record: &Record, workflows: &Workflows, now: DateTime<Utc>) -> Json {
    let mut map = record.fields.clone();
    let kept = [
        ("id", Json::from(record.key.id.clone())),
        ("kind", Json::from(record.key.kind.clone())),
        ("owner", record.owner.clone().map_or(Json::Null, Json::from)),
        (
            "pipeline",
            record.pipeline.clone().map_or(Json::Null, Json::from),
        ),
        ("stage", record.stage.clone().map_or(Json::Null, Json::from)),
        (
            "stage_entered_at",
            record
                .stage_entered_at
                .map_or(Json::Null, |t| Json::from(time(t))),
        ),
        (
            "days_in_stage",
            record.days_in_stage(now).map_or(Json::Null, Json::from),
        ),
        ("created_at", Json::from(time(record.created_at))),
        ("updated_at", Json::from(time(record.updated_at))),
    ];
    for (name, value) in kept {
        if !value.is_null() {
            map.insert(name.to_owned(), value);
        }
    }
    let scores: Map<String, Json> = record
        .scoring
        .iter()
        .map(|(model, standing)| (model.to_owned(), Json::from(round1(standing.score))))
        .collect();
    let first_model = workflows.scoring.iter().find(|m| m.kind == record.key.kind);
    if let Some(standing) = first_model.and_then(|m| record.scoring.get(&m.name)) {
        map.insert("score".to_owned(), Json::from(round1(standing.score)));
    }
    map.insert("scores".to_owned(), Json::Object(scores));
    Json::Object(map)
}

/// Scores are decimals shown to one place (SPEC §7).
fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// RFC 3339 with seconds, as every time is shown.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The event as expressions see it: data beside `id`, `type`, `occurred_at`.
pub fn event_json(event: &Event) -> Json {
    let mut map = event.data.clone();
    map.insert("id".to_owned(), Json::from(event.id.clone()));
    map.insert("type".to_owned(), Json::from(event.event_type.clone()));
    map.insert(
        "occurred_at".to_owned(),
        Json::from(time(event.occurred_at)),
    );
    Json::Object(map)
}

/// Everything in scope for one record and event.
pub fn scope(
    record: &Record,
    event: &Event,
    workflows: &Workflows,
    now: DateTime<Utc>,
    extra: &[(&str, Json)],
) -> Value {
    // The record is converted once and shared by `record` and `KIND`: the
    // scope is rebuilt after every change a rule makes, and the record is
    // most of it.
    let record_value = value_of(record_json(record, workflows, now));
    let mut map = std::collections::BTreeMap::new();
    map.insert(record.key.kind.clone(), record_value.clone());
    map.insert("record".to_owned(), record_value);
    map.insert("event".to_owned(), value_of(event_json(event)));
    map.insert("now".to_owned(), Value::from(time(now)));
    let owner = record
        .owner
        .as_ref()
        .and_then(|o| workflows.team.people.get(o));
    if let Some(person) = owner {
        map.insert("owner".to_owned(), value_of(person));
    }
    for (name, value) in extra {
        map.insert((*name).to_owned(), value_of(value));
    }
    Value::from(map)
}

fn value_of<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// The values a condition reads: each `root.name` in its source whose root
/// is the record, its kind or the event. Kept in run history so "why did
/// this rule fire?" has an answer.
pub fn values_seen(source: &str, context: &Value) -> std::collections::BTreeMap<String, Json> {
    let mut seen = std::collections::BTreeMap::new();
    let bytes = source.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (is_ident(bytes[i]) || bytes[i] == b'.') {
            i += 1;
        }
        let path = &source[start..i];
        let mut parts = path.split('.');
        if let (Some(root), Some(attr)) = (parts.next(), parts.next()) {
            let value = context.get_attr(root).and_then(|r| r.get_attr(attr));
            if let Ok(v) = value
                && !v.is_undefined()
            {
                let json = serde_json::to_value(&v).unwrap_or(Json::Null);
                seen.insert(format!("{root}.{attr}"), json);
            }
        }
    }
    seen
}
