//! `sources:`: webhooks from other tools, verified and mapped to events
//! (SPEC §3.10).

use super::actions::{json_template, relocate};
use super::context::{Cx, Scope};
use super::rules::check_event_type;
use crate::config::diagnostic::Code;
use crate::config::expr::{Escaping, single_expression};
use crate::config::loader::SourceSet;
use crate::config::model::{
    Located, NameOr, SignatureEncoding, SourceEventSpec, SourceSpec, Text, VerifyScheme, VerifySpec,
};
use crate::config::workflows::{MappedValue, SigningSecret, Source, SourceEvent, Verification};
use crate::state::KEPT_FIELDS;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::Duration;

/// How old a signed timestamp may be when `tolerance` is not given: what
/// Stripe's and Standard Webhooks' own libraries accept.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Names a source cannot have: `/hooks/sms` is the text-message webhook.
const RESERVED_NAMES: &[&str] = &["sms"];

/// Event data names that would hide the event's own attributes.
const RESERVED_DATA: &[&str] = &["id", "type", "occurred_at"];

/// Compiles every source, by name.
pub fn compile(set: &SourceSet, cx: &mut Cx) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let mut first_at = BTreeMap::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for spec in &file.model.sources {
            let name = spec.name.get();
            if let Some(first) = first_at.get(name) {
                cx.error(
                    &spec.name,
                    Code::Duplicate,
                    format!("source \"{name}\" is defined twice; first at {first}"),
                );
                continue;
            }
            first_at.insert(name.clone(), cx.at(&spec.name));
            if let Some(source) = compile_source(spec, cx) {
                out.insert(name.clone(), source);
            }
        }
    }
    out
}

fn compile_source(spec: &SourceSpec, cx: &mut Cx) -> Option<Source> {
    let name = spec.name.get();
    let name_ok = check_name(&spec.name, cx);
    let verify = match &spec.verify {
        None => {
            cx.error(
                &spec.name, Code::Missing,
                format!(
                    "source \"{name}\" has no verify; add verify: {{ scheme: hmac, header: ..., secret: \"${{VAR}}\" }} (or write verify: none to accept unsigned posts from anyone)"
                ),
            );
            None
        }
        Some(v) => verification(v, name, cx),
    };
    if spec.events.is_empty() {
        cx.warning(
            &spec.name,
            Code::NoEffect,
            format!("source \"{name}\" has no events, so every payload it receives gives none"),
        );
    }
    let events: Vec<Option<SourceEvent>> = spec.events.iter().map(|e| event(e, cx)).collect();
    let events = events.into_iter().collect::<Option<Vec<_>>>();
    Some(Source {
        name: name.clone(),
        verify: verify?,
        events: events?,
    })
    .filter(|_| name_ok)
}

/// A name is a path segment: letters, digits, `-` and `_`.
fn check_name(name: &Text, cx: &mut Cx) -> bool {
    let text = name.get();
    let shaped = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !shaped {
        cx.error(
            name, Code::Name,
            format!("source name \"{text}\" must be letters, digits, - and _ (it is the path /hooks/NAME)"),
        );
        return false;
    }
    if RESERVED_NAMES.contains(&text.as_str()) {
        cx.error(
            name,
            Code::Name,
            format!("source name \"{text}\" is reserved: /hooks/{text} is dealflow's own"),
        );
        return false;
    }
    true
}

fn verification(
    at: &Located<NameOr<VerifySpec>>,
    source: &str,
    cx: &mut Cx,
) -> Option<Verification> {
    match at.get() {
        NameOr::Name(none) if none == "none" => {
            cx.warning(
                at, Code::Insecure,
                format!("source \"{source}\" is not verified: anyone who can reach /hooks/{source} can post events to it"),
            );
            Some(Verification::None)
        }
        NameOr::Name(other) => {
            cx.error(
                at, Code::Value,
                format!("verify is `none` or a mapping with a scheme (hmac, timestamped, standard, token), not \"{other}\""),
            );
            None
        }
        NameOr::Inline(spec) => scheme(at, spec, cx),
    }
}

fn scheme(
    at: &Located<NameOr<VerifySpec>>,
    spec: &VerifySpec,
    cx: &mut Cx,
) -> Option<Verification> {
    let scheme = *spec.scheme.get();
    let secret = secret(at, spec, cx);
    let header = |cx: &mut Cx| match &spec.header {
        Some(h) => header_name(h, cx),
        None => {
            cx.error(
                at,
                Code::Missing,
                format!(
                    "verify scheme {} needs `header:`, the header that carries the signature",
                    name_of(scheme)
                ),
            );
            None
        }
    };
    let tolerance = |cx: &mut Cx| match &spec.tolerance {
        None => Some(DEFAULT_TOLERANCE),
        Some(t) => cx.positive_duration(t, "tolerance"),
    };
    let allowed: &[&str] = match scheme {
        VerifyScheme::Hmac => &["header", "secret", "prefix", "encoding"],
        VerifyScheme::Timestamped => &["header", "secret", "tolerance"],
        VerifyScheme::Standard => &["secret", "tolerance"],
        VerifyScheme::Token => &["header", "secret"],
    };
    let given = [
        ("header", spec.header.as_ref().map(|v| cx.at(v))),
        ("prefix", spec.prefix.as_ref().map(|v| cx.at(v))),
        ("encoding", spec.encoding.as_ref().map(|v| cx.at(v))),
        ("tolerance", spec.tolerance.as_ref().map(|v| cx.at(v))),
    ];
    let mut ok = true;
    for (key, place) in given {
        let Some(place) = place.filter(|_| !allowed.contains(&key)) else {
            continue;
        };
        cx.error_at(
            place,
            Code::Conflict,
            format!(
                "`{key}:` does not apply to verify scheme {}; it takes {}",
                name_of(scheme),
                allowed.join(", ")
            ),
        );
        ok = false;
    }
    let verification = match scheme {
        VerifyScheme::Hmac => Verification::Hmac {
            header: header(cx)?,
            prefix: spec
                .prefix
                .as_ref()
                .map(|p| p.get().clone())
                .unwrap_or_default(),
            encoding: spec
                .encoding
                .as_ref()
                .map_or(SignatureEncoding::Hex, |e| *e.get()),
            secret: secret?,
        },
        VerifyScheme::Timestamped => Verification::Timestamped {
            header: header(cx)?,
            tolerance: tolerance(cx)?,
            secret: secret?,
        },
        VerifyScheme::Standard => Verification::Standard {
            tolerance: tolerance(cx)?,
            secret: secret?,
        },
        VerifyScheme::Token => Verification::Token {
            header: match &spec.header {
                Some(h) => Some(header_name(h, cx)?),
                None => None,
            },
            secret: secret?,
        },
    };
    ok.then_some(verification)
}

fn name_of(scheme: VerifyScheme) -> &'static str {
    match scheme {
        VerifyScheme::Hmac => "hmac",
        VerifyScheme::Timestamped => "timestamped",
        VerifyScheme::Standard => "standard",
        VerifyScheme::Token => "token",
    }
}

fn secret(
    at: &Located<NameOr<VerifySpec>>,
    spec: &VerifySpec,
    cx: &mut Cx,
) -> Option<SigningSecret> {
    match &spec.secret {
        None => {
            cx.error(
                at,
                Code::Missing,
                "verify needs `secret:`; write secret: \"${VAR}\" and set VAR in the environment",
            );
            None
        }
        Some(s) if s.get().is_empty() => {
            cx.error(
                s,
                Code::Env,
                "the secret is empty; is its environment variable set?",
            );
            None
        }
        Some(s) => Some(SigningSecret(s.get().clone())),
    }
}

/// Header names are matched lower-case, as HTTP treats them.
fn header_name(header: &Text, cx: &mut Cx) -> Option<String> {
    match axum::http::HeaderName::from_bytes(header.get().as_bytes()) {
        Ok(name) => Some(name.as_str().to_owned()),
        Err(_) => {
            cx.error(
                header,
                Code::Value,
                format!("\"{}\" is not a valid header name", header.get()),
            );
            None
        }
    }
}

fn event(at: &Located<SourceEventSpec>, cx: &mut Cx) -> Option<SourceEvent> {
    let spec = at.get();
    let scope = Scope::source(spec.for_each.is_some());
    let for_each = match &spec.for_each {
        None => Some(None),
        Some(f) => cx.value_expr(f, f.get(), &scope).map(Some),
    };
    let condition = match &spec.condition {
        None => Some(None),
        Some(c) => cx.condition(c, &scope).map(Some),
    };
    if let (Some(_), Some(id)) = (&spec.for_each, &spec.id) {
        // Every item would get the payload's id, and all but the first
        // would be dropped as duplicates.
        if !id.get().contains("item") {
            cx.error(
                id, Code::Value,
                "under for_each, the id must tell the items apart: include a value of item, e.g. \"{{ payload.id }}/{{ item.id }}\"",
            );
        }
    }
    let literal_type =
        !spec.event_type.get().contains("{{") && !spec.event_type.get().contains("{%");
    let type_ok = !literal_type || check_event_type(&spec.event_type, cx);
    let mut text = |t: &Text| cx.template(t, &scope, Escaping::None);
    let event_type = text(&spec.event_type);
    let id = match &spec.id {
        None => Some(None),
        Some(i) => text(i).map(Some),
    };
    let kind = text(&spec.record.kind);
    let record_id = text(&spec.record.id);
    let fields = values(&spec.fields, "fields", KEPT_FIELDS, &scope, cx);
    let data = values(&spec.data, "data", RESERVED_DATA, &scope, cx);
    Some(SourceEvent {
        condition: condition?,
        for_each: for_each?,
        event_type: event_type?,
        id: id?,
        kind: kind?,
        record_id: record_id?,
        fields: fields?,
        data: data?,
    })
    .filter(|_| type_ok)
}

/// Compiles `fields:` or `data:`, refusing names the event keeps itself.
fn values(
    map: &BTreeMap<String, Located<Json>>,
    what: &str,
    reserved: &[&str],
    scope: &Scope,
    cx: &mut Cx,
) -> Option<Vec<(String, MappedValue)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in map {
        if reserved.contains(&name.as_str()) {
            cx.error(
                value,
                Code::Name,
                format!("\"{what}.{name}\" is kept by dealflow and cannot be mapped"),
            );
            ok = false;
            continue;
        }
        if name.chars().any(char::is_control) {
            cx.error(
                value,
                Code::Name,
                format!("the name {name:?} in {what} has a control character"),
            );
            ok = false;
            continue;
        }
        let compiled = match value.get() {
            Json::String(text) => match single_expression(text) {
                Some(expr) => {
                    let located = relocate(value, text.clone());
                    cx.value_expr(&located, expr, scope).map(MappedValue::Value)
                }
                None => json_template(value, scope, cx).map(MappedValue::Json),
            },
            _ => json_template(value, scope, cx).map(MappedValue::Json),
        };
        match compiled {
            Some(v) => out.push((name.clone(), v)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}
