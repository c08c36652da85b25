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
        parse_event(&event, self.now)
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
