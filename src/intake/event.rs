//! An event's JSON, as posted to `/v1/events` or made by a source's
//! mapping: every field checked, every problem named in a sentence.

use crate::state::KEPT_FIELDS;
use crate::state::{NewEvent, RecordKey};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

/// Longest id, type, kind or record id accepted.
const MAX_NAME: usize = 256;

/// Names in `data` that would hide the event's own attributes.
const RESERVED_DATA: &[&str] = &["id", "type", "occurred_at"];

/// One event from its JSON, or a sentence saying what is wrong.
///
/// Kinds are open (SPEC §2): a kind no workflow names is accepted here, and
/// counted by the caller so a typo like `leda` shows in `/v1/status`.
pub fn parse_event(value: Json, now: DateTime<Utc>) -> Result<NewEvent, String> {
    // Owned, so the record's fields and the data move into the event
    // instead of being copied out of the request's JSON.
    let Json::Object(mut object) = value else {
        return Err("an event must be a JSON object".to_owned());
    };
    only_keys(
        &object,
        &["id", "type", "record", "data", "occurred_at"],
        "event",
    )?;
    let id = match object.get("id") {
        None | Some(Json::Null) => None,
        Some(v) => Some(name(v, "id")?),
    };
    let event_type = name(object.get("type").ok_or("missing field \"type\"")?, "type")?;
    if event_type.contains(char::is_whitespace) {
        return Err("\"type\" must not contain spaces".to_owned());
    }
    if event_type.starts_with(crate::engine::internal::PREFIX) {
        return Err(format!(
            "\"type\" {event_type:?} is reserved: types starting with \"{}\" are dealflow's own",
            crate::engine::internal::PREFIX
        ));
    }
    let record = object.remove("record").ok_or("missing field \"record\"")?;
    let (key, fields) = parse_record(record)?;
    let data = match object.remove("data") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(d)) => d,
        Some(_) => return Err("\"data\" must be an object".to_owned()),
    };
    no_control_characters_in_keys(&data, "data")?;
    if let Some(reserved) = RESERVED_DATA.iter().find(|k| data.contains_key(**k)) {
        return Err(format!(
            "\"data.{reserved}\" is reserved: event.{reserved} is the event's own"
        ));
    }
    let occurred_at = match object.get("occurred_at") {
        None | Some(Json::Null) => now,
        Some(Json::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| format!("\"occurred_at\" must be an RFC 3339 time, e.g. 2026-03-02T09:00:00Z (got \"{s}\")"))?
            .to_utc(),
        Some(_) => return Err("\"occurred_at\" must be a string".to_owned()),
    };
    Ok(NewEvent {
        id,
        event_type,
        record: key,
        fields,
        data,
        occurred_at,
        depth: 0,
    })
}

fn parse_record(value: Json) -> Result<(RecordKey, Map<String, Json>), String> {
    let Json::Object(mut record) = value else {
        return Err("\"record\" must be an object with kind and id".to_owned());
    };
    only_keys(&record, &["kind", "id", "fields"], "record")?;
    let kind = name(
        record.get("kind").ok_or("missing field \"record.kind\"")?,
        "record.kind",
    )?;
    let id = match record.get("id").ok_or("missing field \"record.id\"")? {
        Json::Number(n) => whole_number(n)?,
        other => name(other, "record.id")?,
    };
    let fields = match record.remove("fields") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(f)) => f,
        Some(_) => return Err("\"record.fields\" must be an object".to_owned()),
    };
    no_control_characters_in_keys(&fields, "record.fields")?;
    if let Some(kept) = fields.keys().find(|k| KEPT_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "\"record.fields.{kept}\" is kept by dealflow and cannot be set by an event"
        ));
    }
    if let Some(owner) = fields
        .get("owner")
        .filter(|o| !(o.is_string() || o.is_null()))
    {
        return Err(format!(
            "\"record.fields.owner\" must be an email address string, not {owner}"
        ));
    }
    Ok((RecordKey { kind, id }, fields))
}

fn only_keys(object: &Map<String, Json>, allowed: &[&str], what: &str) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field \"{k}\" in {what}; allowed: {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// A numeric record id kept exactly as sent: JSON numbers beyond 64-bit
/// integers would be rounded, and two different ids would become one record.
fn whole_number(n: &serde_json::Number) -> Result<String, String> {
    if let Some(u) = n.as_u64() {
        return Ok(u.to_string());
    }
    if let Some(i) = n.as_i64() {
        return Ok(i.to_string());
    }
    Err(format!(
        "\"record.id\" {n} is not a whole number that fits 64 bits; send ids like it as strings"
    ))
}

/// Names become parts of store keys and log lines: control characters
/// (NUL among them, the keys' separator) are refused where they enter.
pub fn control_character(text: &str) -> Option<char> {
    text.chars().find(|c| c.is_control())
}

fn no_control_characters_in_keys(map: &Map<String, Json>, what: &str) -> Result<(), String> {
    match map.keys().find(|k| control_character(k).is_some()) {
        Some(k) => Err(format!(
            "\"{what}\" has a name with a control character ({k:?}); names are printable text"
        )),
        None => Ok(()),
    }
}

fn name(value: &Json, field: &str) -> Result<String, String> {
    match value {
        Json::String(s) if s.trim().is_empty() => Err(format!("\"{field}\" must not be empty")),
        Json::String(s) if control_character(s).is_some() => Err(format!(
            "\"{field}\" must not hold control characters ({s:?})"
        )),
        Json::String(s) if s.len() > MAX_NAME => {
            Err(format!("\"{field}\" is longer than {MAX_NAME} bytes"))
        }
        Json::String(s) => Ok(s.clone()),
        other => Err(format!(
            "\"{field}\" must be a string, not {}",
            kind_of(other)
        )),
    }
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn a_good_event_parses() {
        let e = parse_event(json!({"id": "e1", "type": "form.submitted", "record": {"kind": "lead", "id": 42, "fields": {"email": "a@b.c", "owner": "ana@x"}}, "data": {"path": "/pricing"}}), now()).unwrap();
        assert_eq!(
            (e.id.as_deref(), e.record.id.as_str(), e.occurred_at),
            (Some("e1"), "42", now())
        );
    }

    #[test]
    fn a_kind_no_workflow_names_is_accepted() {
        let e = parse_event(
            json!({"type": "x", "record": {"kind": "leda", "id": "1"}}),
            now(),
        )
        .unwrap();
        assert_eq!(e.record.kind, "leda");
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            (json!([]), "must be a JSON object"),
            (
                json!({"record": {"kind": "lead", "id": "1"}}),
                "missing field \"type\"",
            ),
            (json!({"type": "x"}), "missing field \"record\""),
            (
                json!({"type": 5, "record": {}}),
                "\"type\" must be a string, not a number",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead"}}),
                "missing field \"record.id\"",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "1", "fields": {"stage": "won"}}}),
                "\"record.fields.stage\" is kept",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "1"}, "data": {"type": 1}}),
                "\"data.type\" is reserved",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "1"}, "occurred_at": "yesterday"}),
                "RFC 3339",
            ),
            (json!({"type": "x", "recrd": {}}), "unknown field \"recrd\""),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "L9\u{0}x"}}),
                "\"record.id\" must not hold control characters",
            ),
            (
                json!({"type": "x\u{7}", "record": {"kind": "lead", "id": "1"}}),
                "\"type\" must not hold control characters",
            ),
            (
                json!({"type": "x", "record": {"kind": "le\nad", "id": "1"}}),
                "\"record.kind\" must not hold control characters",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "1", "fields": {"a\u{0}b": 1}}}),
                "\"record.fields\" has a name with a control character",
            ),
            (
                json!({"type": "x", "record": {"kind": "lead", "id": "1"}, "data": {"\u{1b}": 1}}),
                "\"data\" has a name with a control character",
            ),
            (
                serde_json::from_str::<Json>(r#"{"type": "x", "record": {"kind": "lead", "id": 123456789012345678901234567890}}"#).unwrap(),
                "is not a whole number that fits 64 bits",
            ),
            (
                json!({"type": "a b", "record": {"kind": "lead", "id": "1"}}),
                "must not contain spaces",
            ),
        ];
        for (input, expected) in cases {
            let err = parse_event(input.clone(), now()).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            "[a-z._ ]{0,12}".prop_map(Json::from),
            prop::sample::select(vec![
                "type", "record", "kind", "id", "fields", "lead", "owner", "stage", "data"
            ])
            .prop_map(Json::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "type",
                        "record",
                        "kind",
                        "id",
                        "fields",
                        "data",
                        "occurred_at",
                        "x"
                    ])
                    .prop_map(String::from),
                    inner,
                    0..5
                )
                .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn any_json_is_parsed_or_refused_without_panic(value in arbitrary_json()) {
            let _ = parse_event(value, now());
        }

        #[test]
        fn any_bytes_never_panic_the_body_reader(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(value) = serde_json::from_slice::<Json>(&bytes) {
                let _ = parse_event(value, now());
            }
        }
    }
}
