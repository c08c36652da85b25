//! The outbox page (admins): dead and held sends with their last error,
//! and the decision on each, retry or cancel.

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, check_csrf, layout};
use super::{Posted, done};
use crate::state::OutboxStatus;
use crate::store::{OutboxFilter, Store};
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// Rows shown per state.
const SHOWN: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    notice: Option<String>,
}

/// `GET /outbox`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    query: Result<Query<OutboxQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(q) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let app = &console.app;
    let workflows = app.workflows.load();
    let rows = |status| -> Result<Vec<serde_json::Value>, PageError> {
        let filter = OutboxFilter {
            status: Some(status),
            record: None,
        };
        Ok(app
            .store
            .outbox_matching(&filter, None, SHOWN)?
            .items
            .iter()
            .map(|row| {
                let mut shown = crate::api::outbox::shown(row, &workflows, &app.unsubscribe);
                shown["record_href"] = super::record_href(&row.record).into();
                shown
            })
            .collect())
    };
    let context = minijinja::context! {
        dead => super::value(&rows(OutboxStatus::Dead)?),
        held => super::value(&rows(OutboxStatus::Held)?),
        notice => q.notice,
        limit => SHOWN,
    };
    Ok(page(
        "outbox.html",
        layout(&console, &session, "outbox"),
        context,
    ))
}

/// `POST /outbox/{id}/retry` or `/cancel`.
pub async fn act<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
    Form(posted): Form<Posted>,
) -> Result<Response, PageError> {
    check_csrf(&console, &session, &posted.csrf)?;
    crate::api::outbox::decide(&console.app, &id, &action).await?;
    let did = if action == "retry" {
        "queued again"
    } else {
        "cancelled"
    };
    Ok(done("/outbox", &format!("{id} {did}")))
}
