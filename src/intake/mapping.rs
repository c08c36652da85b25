//! A source's mapping: one verified payload → zero, one or many events
//! (SPEC §3.10). Pure: the same payload, workflows and time give the same
//! events, ids included, so a redelivered payload is a duplicate.

use super::event::parse_event;
use super::verify::{Headers, Verified};
use crate::config::Workflows;
use crate::config::workflows::{MappedValue, Source, SourceEvent};
use crate::state::NewEvent;
use chrono::{DateTime, Utc};
use minijinja::Value;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

/// Longest event id kept as composed; longer ones are shortened to a digest.
const MAX_ID: usize = 256;

/// Why a verified payload gave no events. It is kept with this reason and
/// can be replayed after the workflows are fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmappable {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// An expression or template failed (a missing value, a type error).
    #[error("events[{event}]{item}: {message}")]
    Expression {
        /// Which entry of `events:`.
        event: usize,
        /// ` item N` under `for_each`, else empty.
        item: String,
        /// What went wrong.
        message: String,
    },
    /// The mapped event is not a valid event (an empty kind, a kept field).
    #[error("events[{event}]{item} is not a valid event: {message}")]
    Invalid {
        /// Which entry of `events:`.
        event: usize,
        /// ` item N` under `for_each`, else empty.
        item: String,
        /// What is wrong.
        message: String,
    },
}

impl Unmappable {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Unmappable::NotJson(_) => "not_json",
            Unmappable::Expression { .. } => "expression",
            Unmappable::Invalid { .. } => "invalid_event",
        }
    }
}

/// Maps a verified payload; all its events or none.
pub fn map(
    workflows: &Workflows,
    source: &Source,
    body: &[u8],
    headers: &Headers,
    verified: &Verified,
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, Unmappable> {
    let payload: Json =
        serde_json::from_slice(body).map_err(|e| Unmappable::NotJson(e.to_string()))?;
    let payload = Value::from(minijinja::value::Serde(payload));
    let headers = Value::from(minijinja::value::Serde(headers));
    let now_text = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut events = Vec::new();
    for (index, spec) in source.events.iter().enumerate() {
        let mapper = Mapper {
            workflows,
            source,
            spec,
            index,
            verified,
            now,
        };
        let base = [
            ("payload", payload.clone()),
            ("headers", headers.clone()),
            ("now", Value::from(now_text.clone())),
        ];
        match &spec.for_each {
            None => events.extend(mapper.one(&scope(&base, None), None)?),
            Some(list) => {
                let items = workflows
                    .expressions
                    .value_of(list, &scope(&base, None))
                    .map_err(|e| mapper.failed(None, e.to_string()))?;
                let Json::Array(items) = items else {
                    let message = format!(
                        "for_each `{}` gave {}, not a list",
                        list.source,
                        short(&items)
                    );
                    return Err(mapper.failed(None, message));
                };
                for (n, item) in items.into_iter().enumerate() {
                    let item = Value::from(minijinja::value::Serde(item));
                    events.extend(mapper.one(&scope(&base, Some(item)), Some(n))?);
                }
            }
        }
    }
    Ok(events)
}

fn scope(base: &[(&str, Value)], item: Option<Value>) -> Value {
    let mut map: std::collections::BTreeMap<&str, Value> = base.iter().cloned().collect();
    if let Some(item) = item {
        map.insert("item", item);
    }
    Value::from(map)
}

/// One entry of `events:` at work on one payload.
struct Mapper<'a> {
    workflows: &'a Workflows,
    source: &'a Source,
    spec: &'a SourceEvent,
    index: usize,
    verified: &'a Verified,
    now: DateTime<Utc>,
}

impl Mapper<'_> {
    /// The event for one payload (or one item of it), if its `if` holds.
    fn one(&self, scope: &Value, item: Option<usize>) -> Result<Option<NewEvent>, Unmappable> {
        let exprs = &self.workflows.expressions;
        if let Some(condition) = &self.spec.condition {
            let holds = exprs
                .eval(condition, scope)
                .map_err(|e| self.failed(item, e.to_string()))?;
            if !holds {
                return Ok(None);
            }
        }
        let text = |t| {
            exprs
                .render(t, scope)
                .map_err(|e| self.failed(item, e.to_string()))
        };
        let event_type = text(&self.spec.event_type)?;
        let kind = text(&self.spec.kind)?;
        let record_id = text(&self.spec.record_id)?;
        let own_id = match &self.spec.id {
            Some(t) => Some(text(t)?)
                .filter(|id| !id.trim().is_empty())
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(
                        item,
                        "\"id\" rendered empty; a redelivery could not be told apart".to_owned(),
                    )
                })?,
            None => None,
        };
        let fields = self.values(&self.spec.fields, scope, item)?;
        let data = self.values(&self.spec.data, scope, item)?;
        let id = self.event_id(&event_type, own_id.as_deref(), item);
        let event = json!({
            "id": id,
            "type": event_type,
            "record": { "kind": kind, "id": record_id, "fields": fields },
            "data": data,
        });
        parse_event(event, self.now)
            .map(Some)
            .map_err(|message| self.invalid(item, message))
    }

    fn values(
        &self,
        values: &[(String, MappedValue)],
        scope: &Value,
        item: Option<usize>,
    ) -> Result<Map<String, Json>, Unmappable> {
        let exprs = &self.workflows.expressions;
        let mut out = Map::new();
        for (name, value) in values {
            let v = match value {
                MappedValue::Value(expr) => exprs.value_of(expr, scope),
                MappedValue::Json(template) => template.render(exprs, scope),
            }
            .map_err(|e| self.failed(item, format!("{name}: {e}")))?;
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// `SOURCE/TYPE/ID`, so two sources or two types never share ids
    /// (under `for_each` the id names the item itself: a sender may batch
    /// its retries differently); else from the sender's delivery id (and
    /// the item's place in it); none otherwise (every post is new).
    fn event_id(&self, event_type: &str, own: Option<&str>, item: Option<usize>) -> Option<String> {
        let item = item.map(|n| format!("/{n}")).unwrap_or_default();
        let id = match (own, &self.verified.delivery_id) {
            (Some(own), _) => format!("{}/{event_type}/{own}", self.source.name),
            (None, Some(delivery)) => {
                format!("{}/{delivery}/{}{item}", self.source.name, self.index)
            }
            (None, None) => return None,
        };
        if id.len() <= MAX_ID && !id.chars().any(char::is_control) {
            return Some(id);
        }
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        Some(format!("{}/sha256:{digest}", self.source.name))
    }

    fn failed(&self, item: Option<usize>, message: String) -> Unmappable {
        Unmappable::Expression {
            event: self.index,
            item: item_text(item),
            message,
        }
    }

    fn invalid(&self, item: Option<usize>, message: String) -> Unmappable {
        Unmappable::Invalid {
            event: self.index,
            item: item_text(item),
            message,
        }
    }
}

fn item_text(item: Option<usize>) -> String {
    item.map(|n| format!(" item {n}")).unwrap_or_default()
}

/// A value named in a message, cut short.
fn short(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FLOWS: &str = r#"
sources:
  - name: forms
    verify: none
    events:
      - if: payload.kind == "one"
        type: "form.{{ payload.what }}"
        id: "{{ payload.id }}"
        record: { kind: "{{ payload.record_kind }}", id: "{{ payload.email | lower }}" }
        fields: { email: "{{ payload.email }}", seats: "{{ payload.seats }}", note: "n: {{ payload.note | default('') }}" }
      - for_each: payload.items
        type: item.seen
        id: "{{ payload.id }}/{{ item.id }}"
        record: { kind: lead, id: "{{ item.id }}" }
        data: { value: "{{ item.value }}" }
"#;

    /// Compiled once: the property tests map thousands of payloads.
    static WORKFLOWS: std::sync::LazyLock<Workflows> =
        std::sync::LazyLock::new(|| crate::config::load_for_tests(FLOWS));

    fn map_text(workflows: &Workflows, body: &[u8]) -> Result<Vec<NewEvent>, Unmappable> {
        let source = &workflows.sources["forms"];
        let now = DateTime::UNIX_EPOCH;
        map(
            workflows,
            source,
            body,
            &Headers::new(),
            &Verified::default(),
            now,
        )
    }

    #[test]
    fn one_payload_gives_none_one_or_many_events_with_typed_values() {
        let workflows = &*WORKFLOWS;
        let body = br#"{"kind": "one", "what": "sent", "id": "p1", "record_kind": "lead", "email": "Pat@X.example", "seats": 3,
            "items": [{"id": "a", "value": 1}, {"id": "b", "value": [2]}]}"#;
        let events = map_text(workflows, body).unwrap();
        let shown: Vec<(String, Option<String>, String)> = events
            .iter()
            .map(|e| (e.event_type.clone(), e.id.clone(), e.record.id.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "form.sent".into(),
                    Some("forms/form.sent/p1".into()),
                    "pat@x.example".into()
                ),
                (
                    "item.seen".into(),
                    Some("forms/item.seen/p1/a".into()),
                    "a".into()
                ),
                (
                    "item.seen".into(),
                    Some("forms/item.seen/p1/b".into()),
                    "b".into()
                ),
            ]
        );
        assert_eq!(events[0].fields["seats"], json!(3));
        assert_eq!(events[0].fields["note"], json!("n: "));
        assert_eq!(events[2].data["value"], json!([2]));
        let none = map_text(workflows, br#"{"kind": "other", "items": []}"#).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn what_cannot_be_mapped_says_why() {
        let workflows = &*WORKFLOWS;
        let cases: [(&[u8], &str); 5] = [
            (b"{", "the body is not JSON"),
            (br#"{"kind": "one", "items": []}"#, "events[0]: "),
            (br#"{"kind": "x", "items": 5}"#, "for_each `payload.items` gave 5, not a list"),
            (br#"{"kind": "x", "id": "p", "items": [{"id": "", "value": 1}]}"#, "events[1] item 0 is not a valid event: \"record.id\" must not be empty"),
            (br#"{"kind": "one", "what": "x", "id": "p", "record_kind": "le\nad", "email": "e", "seats": 1, "items": []}"#, "must not hold control characters"),
        ];
        for (body, expected) in cases {
            let why = map_text(workflows, body).unwrap_err().to_string();
            assert!(
                why.contains(expected),
                "{}: {why}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            ".{0,12}".prop_map(Json::from),
            Just(Json::from("one")),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Json::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "kind",
                        "what",
                        "id",
                        "record_kind",
                        "email",
                        "seats",
                        "note",
                        "items",
                        "value",
                        "x"
                    ])
                    .prop_map(String::from),
                    inner,
                    0..8
                )
                .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// Any payload maps or is kept with a reason; never a panic, and
        /// every event it gives would pass `POST /v1/events`.
        #[test]
        fn any_payload_is_mapped_or_kept_never_a_panic(payload in arbitrary_json()) {
            if let Ok(events) = map_text(&WORKFLOWS, payload.to_string().as_bytes()) {
                for e in events {
                    prop_assert!(!e.record.id.trim().is_empty() && !e.record.kind.trim().is_empty());
                    prop_assert!(e.id.as_deref().is_none_or(|id| id.len() <= 256));
                }
            }
        }

        #[test]
        fn any_bytes_are_mapped_or_kept_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = map_text(&WORKFLOWS, &body);
        }
    }
}
