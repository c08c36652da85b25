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

/// A row as the API shows it: an email's body as the recipient reads it,
/// a webhook's headers as `{name, value}` objects, never a signing secret
/// or another `${VAR}` value.
fn shown(row: &OutboxEntry, workflows: &Workflows, key: &UnsubscribeKey) -> Value {
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
