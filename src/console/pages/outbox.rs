//! The outbox page (admins): dead and held sends with their last error,
//! and the decision on each, retry or cancel.

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::{PageQuery, done};
use crate::store::Store;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use std::sync::Arc;

/// Rows shown per state.
const SHOWN: usize = 200;

/// `GET /outbox`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    PageQuery(q): PageQuery<super::NoticeQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let workflows = app.workflows.load();
    let stuck = console
        .figures
        .stuck_sends(app.store.clone(), SHOWN)
        .await?;
    let rows = |list: &[crate::state::OutboxEntry]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|row| {
                let mut shown = crate::api::outbox::shown(row, &workflows, &app.unsubscribe);
                shown["record_href"] = super::record_href(&row.record).into();
                shown
            })
            .collect()
    };
    let context = minijinja::context! {
        dead => super::value(&rows(&stuck.dead)),
        held => super::value(&rows(&stuck.held)),
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
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, PageError> {
    crate::api::outbox::decide(&console.app, &id, &action).await?;
    let did = if action == "retry" {
        "queued again"
    } else {
        "cancelled"
    };
    Ok(done("/outbox", &format!("{id} {did}")))
}
