//! The suppression list (SPEC §3.8): addresses no workflow emails, with why
//! and since when; an admin can take one off (a prospect who unsubscribed by
//! mistake and asked to hear from us again).

use super::extract::page_limit;
use super::{ApiError, App};
use crate::store::{IntakeWrites, Store};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressionQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/suppressions`: `{"suppressions": [{address, reason, at}], "next"}`.
pub(super) async fn list<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<SuppressionQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = app
        .store
        .suppressions(q.after.as_deref(), page_limit(q.limit))?;
    Ok(Json(
        json!({ "suppressions": page.items, "next": page.next }),
    ))
}

/// `DELETE /v1/suppressions/{address}` (any spelling of it): `200` with the
/// suppression removed, `404` when the address is not suppressed.
pub(super) async fn remove<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = app
        .store
        .suppression(&address)?
        .ok_or_else(|| ApiError::not_found(format!("{address} is not suppressed")))?;
    let mut changes = IntakeWrites::default();
    changes.unsuppress([address]);
    app.store.commit(changes.into())?;
    app.store.flush().await?;
    tracing::info!(address = %found.address, "Suppression removed.");
    Ok(Json(json!({ "removed": found })))
}
