//! `POST /v1/events`: events read from request bodies, every field
//! checked ([`crate::intake::event`]), every problem named, nothing stored
//! unless the whole batch is valid, and the `202` only once they are durable.

use super::{ApiError, App};
use crate::intake::event::parse_event;
use crate::store::Store;
use axum::Json as JsonBody;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use std::sync::Arc;

pub(super) async fn post_events<S: Store>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Json = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let single = !value.is_array();
    let items = match value {
        Json::Array(items) if items.is_empty() => {
            return Err(ApiError::bad_request(
                "empty_batch",
                "the array holds no events",
            ));
        }
        Json::Array(items) => items,
        other => vec![other],
    };
    let workflows = app.workflows.load();
    let now = app.clock.now();
    let count = items.len();
    let mut events = Vec::with_capacity(count);
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_event(item, now) {
            Ok(e) => events.push(e),
            Err(message) => problems.push(json!({ "index": index, "message": message })),
        }
    }
    if !problems.is_empty() {
        let message = if single {
            problems[0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            format!(
                "{} of {} events are invalid; none was stored",
                problems.len(),
                count
            )
        };
        return Err(
            ApiError::bad_request("invalid_event", message).with(json!({ "events": problems }))
        );
    }
    crate::telemetry::events_ingested(events.iter().map(|e| e.event_type.as_str()), &workflows);
    let unnamed = super::UnnamedKinds::find(&events, &workflows);
    let appended = app.appender.append(events).await?;
    app.unnamed_kinds.count(unnamed, &appended);
    let answers: Vec<Json> = appended
        .iter()
        .map(|a| json!({ "id": a.id, "duplicate": a.duplicate }))
        .collect();
    let body = if single {
        answers[0].clone()
    } else {
        json!({ "accepted": answers.len(), "events": answers })
    };
    Ok((StatusCode::ACCEPTED, JsonBody(body)).into_response())
}
