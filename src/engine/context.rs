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
    let owner = record
        .owner
        .as_ref()
        .and_then(|o| workflows.team.people.get(o));
    Value::from_object(Scope {
        kind: record.key.kind.clone(),
        record: Lazy::new(record_json(record, workflows, now)),
        event: Lazy::new(event_json(event)),
        now: Value::from(time(now)),
        owner: owner.map(value_of),
        extra: extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value_of(value)))
            .collect(),
    })
}

/// The names in scope. The record and the event are converted for
/// minijinja when first read: a condition reads a field or two, and
/// converting the whole record for every event was a third of the
/// engine's work on one under W1. The record is converted once for
/// `record` and `KIND`.
#[derive(Debug)]
struct Scope {
    kind: String,
    record: Lazy,
    event: Lazy,
    now: Value,
    owner: Option<Value>,
    extra: std::collections::BTreeMap<String, Value>,
}

impl minijinja::value::Object for Scope {
    fn get_value(self: &std::sync::Arc<Self>, name: &Value) -> Option<Value> {
        // Later names hide earlier ones, as when the scope was one map
        // filled in this order: KIND, record, event, now, owner, extras.
        let name = name.as_str()?;
        if let Some(value) = self.extra.get(name) {
            return Some(value.clone());
        }
        match name {
            "owner" if self.owner.is_some() => self.owner.clone(),
            "now" => Some(self.now.clone()),
            "event" => Some(self.event.get()),
            "record" => Some(self.record.get()),
            _ if name == self.kind => Some(self.record.get()),
            _ => None,
        }
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        let mut names: std::collections::BTreeSet<&str> =
            ["record", "event", "now", self.kind.as_str()].into();
        names.extend(self.owner.as_ref().map(|_| "owner"));
        names.extend(self.extra.keys().map(String::as_str));
        let names: Vec<Value> = names.into_iter().map(Value::from).collect();
        minijinja::value::Enumerator::Values(names)
    }
}

/// A JSON value converted for minijinja when first read.
#[derive(Debug)]
struct Lazy {
    json: Json,
    value: std::sync::OnceLock<Value>,
}

impl Lazy {
    fn new(json: Json) -> Self {
        Lazy {
            json,
            value: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Value {
        self.value.get_or_init(|| value_of(&self.json)).clone()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RecordKey;
    use serde_json::json;

    fn workflows() -> Workflows {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.yaml"), "rules: []\n").unwrap();
        let (w, d) = crate::config::load(dir.path(), &std::collections::HashMap::new());
        w.unwrap_or_else(|| panic!("{d:?}"))
    }

    fn lead_and_event() -> (Record, Event) {
        let now = DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
            .unwrap()
            .to_utc();
        let key = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let mut record = Record::new(key.clone(), now);
        record.fields.insert("company".into(), json!("Acme"));
        let event = Event {
            seq: 1,
            id: "e1".into(),
            event_type: "form.submitted".into(),
            record: key,
            fields: Map::new(),
            data: json!({"lead": {"score": 72}}).as_object().cloned().unwrap(),
            occurred_at: now,
            depth: 0,
        };
        (record, event)
    }

    #[test]
    fn the_scope_answers_each_name_and_converts_the_record_only_when_read() {
        let (record, event) = lead_and_event();
        let (w, now) = (workflows(), event.occurred_at);
        let scope = scope(&record, &event, &w, now, &[]);
        let read = |root: &str, attr: &str| scope.get_attr(root).unwrap().get_attr(attr).unwrap();
        assert_eq!(
            read("event", "lead").get_attr("score").unwrap(),
            Value::from(72)
        );
        let kept = scope.downcast_object_ref::<Scope>().unwrap();
        assert!(
            kept.record.value.get().is_none(),
            "the record was converted unread"
        );
        assert_eq!(read("lead", "company"), Value::from("Acme"));
        assert_eq!(read("record", "company"), Value::from("Acme"));
        assert!(scope.get_attr("owner").unwrap().is_undefined());
        assert!(scope.get_attr("nothing").unwrap().is_undefined());
        assert_eq!(scope.get_attr("now").unwrap(), Value::from(time(now)));
        let names: Vec<Value> = scope.try_iter().unwrap().collect();
        assert_eq!(names, ["event", "lead", "now", "record"].map(Value::from));
    }

    #[test]
    fn an_extra_name_hides_the_one_it_shares_a_name_with() {
        let (record, event) = lead_and_event();
        let (w, now) = (workflows(), event.occurred_at);
        let scope = scope(&record, &event, &w, now, &[("event", json!({"x": 1}))]);
        let event = scope.get_attr("event").unwrap();
        assert_eq!(event.get_attr("x").unwrap(), Value::from(1));
    }
}
