//! `/v1/outbox`: deliveries with their state, attempts and last error,
//! shown as the recipient reads them and without secrets.

use super::extract::{page_limit, record_param};
use super::{ApiError, App};
use crate::config::Workflows;
use crate::delivery::message;
use crate::delivery::unsubscribe::UnsubscribeKey;
use crate::state::{Delivery, OutboxEntry, OutboxStatus};
use crate::store::{OutboxFilter, Store};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboxQuery {
    status: Option<String>,
    record: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/outbox`: deliveries with their state, attempts and last error.
pub(super) async fn get_outbox<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<OutboxStatus>(json!(s)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("status must be pending, sending, sent, failed, dead, cancelled or held, not \"{s}\""),
                )
            })
        })
        .transpose()?;
    let filter = OutboxFilter {
        status,
        record: record_param(q.record.as_deref())?,
    };
    let page = app
        .store
        .outbox_matching(&filter, q.after.as_deref(), page_limit(q.limit))?;
    let workflows = app.workflows.load();
    let rows: Vec<Value> = page
        .items
        .iter()
        .map(|row| shown(row, &workflows, &app.unsubscribe))
        .collect();
    Ok(Json(json!({ "outbox": rows, "next": page.next })))
}

/// `POST /v1/outbox/{id}/retry` or `/cancel`: a person's decision on a
/// dead or held send.
pub(super) async fn post_decision<S: Store>(
    State(app): State<Arc<App<S>>>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    decide(&app, &id, &action).await.map(Json)
}

/// Retries a dead or held send from its first try, or cancels it for good.
/// Only rows delivery has stopped working on can be decided on, so the
/// decision never races a send in progress.
pub(crate) async fn decide<S: Store>(
    app: &App<S>,
    id: &str,
    action: &str,
) -> Result<Value, ApiError> {
    if !matches!(action, "retry" | "cancel") {
        return Err(ApiError::not_found(format!(
            "no outbox action {action}; there are retry and cancel"
        )));
    }
    let mut row = app
        .store
        .outbox_entry(id)?
        .ok_or_else(|| ApiError::not_found(format!("no outbox row {id}")))?;
    if !matches!(row.status, OutboxStatus::Dead | OutboxStatus::Held) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_decidable",
            format!(
                "only dead or held sends can be retried or cancelled; {id} is {}",
                json!(row.status).as_str().unwrap_or("in another state")
            ),
        ));
    }
    if action == "retry" {
        row.status = OutboxStatus::Pending;
        row.attempts = 0;
        row.next_attempt_at = Some(app.clock.now());
    } else {
        row.status = OutboxStatus::Cancelled;
        row.next_attempt_at = None;
        row.last_error = Some(format!(
            "cancelled by a person; before that: {}",
            row.last_error.as_deref().unwrap_or("no error")
        ));
    }
    let status = row.status;
    let mut changes = crate::store::DeliveryWrites::default();
    changes.outbox([row]);
    super::extract::commit_durably(app, changes).await?;
    Ok(json!({ "id": id, "status": status }))
}

/// A row as the API shows it: an email's body as the recipient reads it,
/// a webhook's headers as `{name, value}` objects, never a signing secret
/// or another `${VAR}` value.
pub(crate) fn shown(row: &OutboxEntry, workflows: &Workflows, key: &UnsubscribeKey) -> Value {
    let mut shown = row.clone();
    match &mut shown.delivery {
        Delivery::Email { body, .. } => {
            if let Some(sent) = message::body_as_sent(row, workflows, key) {
                *body = sent;
            }
        }
        Delivery::Webhook { secret, .. } => {
            if secret.is_some() {
                *secret = Some("(set)".to_owned());
            }
        }
        Delivery::Sms { .. } => {}
    }
    let mut value = serde_json::to_value(&shown).unwrap_or(Value::Null);
    if let Delivery::Webhook { headers, .. } = &row.delivery {
        let named: Vec<Value> = headers
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        value["delivery"]["headers"] = Value::Array(named);
    }
    // A webhook's URL, headers and body were rendered with `${VAR}` values.
    workflows.secrets.redact_json(&mut value);
    value
}
