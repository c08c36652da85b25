//! Sources (SPEC §3.10): `POST /hooks/{name}`, where other tools post their
//! own JSON, and `/v1/sources/{name}/rejected`, the payloads kept because
//! they could not be mapped.
//!
//! A delivery is verified before anything of it is stored; a verified one
//! is answered `202` only once its events, or the payload itself when it
//! cannot be mapped, are durable. Nothing a sender delivered is dropped.

use super::extract::{commit_durably, page_limit};
use super::kept::{headers, kept_payload};
use super::{ApiError, App};
use crate::config::workflows::{Source, Verification};
use crate::intake::mapping::{self, Unmappable};
use crate::intake::verify::{self, Delivery, Headers, Verified};
use crate::state::{NewEvent, RejectedPayload};
use crate::store::{IntakeWrites, Store};
use crate::telemetry::{self, SourceStep};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// `POST /hooks/{name}`: verify, map, store, then answer.
pub(super) async fn post_hook<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    header_map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let workflows = app.workflows.load_full();
    let Some(source) = workflows.sources.get(&name) else {
        return Err(ApiError::not_found(format!(
            "no source is called \"{name}\""
        )));
    };
    telemetry::source(&name, SourceStep::Received);
    let headers = headers(&header_map);
    let token = super::extract::query_value(query.as_deref(), "token");
    let delivery = Delivery {
        body: &body,
        headers: &headers,
        query_token: token.as_deref(),
    };
    let now = app.clock.now();
    let verified = match verify::verify(&source.verify, &delivery, now) {
        Ok(verified) => verified,
        Err(refusal) => {
            telemetry::source(&name, SourceStep::Rejected(refusal.label()));
            tracing::info!(source = %name, reason = %refusal, "Refused a delivery to a source.");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                refusal.to_string(),
            ));
        }
    };
    telemetry::source(&name, SourceStep::Verified);
    match mapping::map(&workflows, source, &body, &headers, &verified, now) {
        Ok(events) => accept(&app, &name, events).await,
        Err(why) => {
            let payload = kept(source, &body, headers, &verified, &why, now);
            keep(&app, &name, payload, &why).await
        }
    }
}

/// Appends a payload's events; answers once they are durable.
async fn accept<S: Store>(
    app: &App<S>,
    source: &str,
    events: Vec<NewEvent>,
) -> Result<Response, ApiError> {
    let count = events.len();
    let appended = if events.is_empty() {
        Vec::new()
    } else {
        app.appender.append(events).await?
    };
    let duplicates = appended.iter().filter(|a| a.duplicate).count();
    telemetry::source(source, SourceStep::Events((count - duplicates) as u64));
    let ids: Vec<&str> = appended.iter().map(|a| a.id.as_str()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "events": count, "duplicates": duplicates, "ids": ids })),
    )
        .into_response())
}

/// Keeps an unmappable payload; answers `202` once it is durable, so the
/// sender does not retry what retrying cannot fix.
async fn keep<S: Store>(
    app: &App<S>,
    source: &str,
    payload: RejectedPayload,
    why: &Unmappable,
) -> Result<Response, ApiError> {
    let id = payload.id.clone();
    tracing::warn!(source, kept = %id, reason = %why, "A source's payload could not be mapped; it is kept to be replayed.");
    let mut changes = IntakeWrites::default();
    changes.keep([payload]);
    commit_durably(app, changes).await?;
    telemetry::source(source, SourceStep::Rejected(why.label()));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "events": 0, "kept": id, "reason": why.to_string() })),
    )
        .into_response())
}

/// The row that keeps an unmappable payload.
fn kept(
    source: &Source,
    body: &[u8],
    mut headers: Headers,
    verified: &Verified,
    why: &Unmappable,
    now: DateTime<Utc>,
) -> RejectedPayload {
    if let Verification::Token {
        header: Some(h), ..
    } = &source.verify
    {
        headers.remove(h);
    }
    let mut payload = kept_payload(&source.name, body, headers, now);
    payload.reason = why.to_string();
    payload.delivery_id = verified.delivery_id.clone();
    payload
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectedQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/sources/{name}/rejected`: kept payloads, oldest first.
pub(super) async fn get_rejected<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
    Query(q): Query<RejectedQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = app
        .store
        .rejected_payloads(&name, q.after.as_deref(), page_limit(q.limit))?;
    let secrets = &app.workflows.load().secrets;
    let items: Vec<Value> = page.items.iter().map(|p| shown(p, secrets)).collect();
    Ok(Json(json!({ "rejected": items, "next": page.next })))
}

/// A kept payload as the API shows it: the body as text when it is UTF-8,
/// else base64; secrets of the workflows masked.
pub(crate) fn shown(p: &RejectedPayload, secrets: &crate::config::environment::Secrets) -> Value {
    let body = match std::str::from_utf8(&p.body) {
        Ok(text) => json!({ "body": secrets.redact(text) }),
        Err(_) => {
            json!({ "body_base64": base64::engine::general_purpose::STANDARD.encode(&p.body) })
        }
    };
    let mut shown = json!({
        "id": p.id,
        "source": p.source,
        "received_at": p.received_at,
        "reason": secrets.redact(&p.reason),
        "headers": p.headers,
        "delivery_id": p.delivery_id,
    });
    if let (Some(shown), Value::Object(body)) = (shown.as_object_mut(), body) {
        shown.extend(body);
    }
    shown
}

/// `POST /v1/sources/{name}/rejected/{id}/replay`: maps a kept payload
/// again under the workflows running now. Its events and the payload's
/// removal are one commit; a payload that still cannot be mapped stays,
/// with the new reason, and the answer is `422`.
pub(super) async fn replay<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    replay_kept(&app, &name, &id)
        .await
        .map(|answer| Json(answer).into_response())
}

/// Maps a kept payload again (the API's and the console's replay).
pub(crate) async fn replay_kept<S: Store>(
    app: &App<S>,
    name: &str,
    id: &str,
) -> Result<Value, ApiError> {
    let (name, id) = (name.to_owned(), id.to_owned());
    let Some(mut payload) = app.store.rejected_payload(&name, &id)? else {
        return Err(ApiError::not_found(format!(
            "source \"{name}\" keeps no payload {id}"
        )));
    };
    if name == super::sms::SOURCE {
        return super::sms::replay(app, payload).await;
    }
    let workflows = app.workflows.load_full();
    let Some(source) = workflows.sources.get(&name) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "unknown_source",
            format!(
                "the running workflows have no source \"{name}\"; add it back to replay what it kept"
            ),
        ));
    };
    let verified = Verified {
        delivery_id: payload.delivery_id.clone(),
    };
    // Mapped at its arrival time: the events happened then, and the ids
    // come out as a first mapping would have made them.
    let at = payload.received_at;
    match mapping::map(
        &workflows,
        source,
        &payload.body,
        &payload.headers,
        &verified,
        at,
    ) {
        Ok(events) => {
            let count = events.len();
            let mut changes = IntakeWrites::default();
            changes.raise(events).replayed([(name.clone(), id.clone())]);
            commit_durably(app, changes).await?;
            telemetry::source(&name, SourceStep::Events(count as u64));
            Ok(json!({ "replayed": id, "events": count }))
        }
        Err(why) => {
            payload.reason = why.to_string();
            let mut changes = IntakeWrites::default();
            changes.keep([payload]);
            commit_durably(app, changes).await?;
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unmappable",
                format!("the payload still cannot be mapped: {why}"),
            ))
        }
    }
}
