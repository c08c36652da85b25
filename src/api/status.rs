//! How the daemon is doing: `/v1/status`, `/v1/reload`
//! and Prometheus `/metrics`.

use super::{ApiError, App};
use crate::engine::time;
use crate::store::Store;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /metrics`: Prometheus text format.
pub(super) async fn get_metrics<S: Store>(
    State(app): State<Arc<App<S>>>,
) -> Result<Response, ApiError> {
    let Some(handle) = app.metrics.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder is installed in this process",
        ));
    };
    let workflows = app.workflows.load_full();
    let store = app.store.clone();
    let now = app.clock.now();
    let text = super::extract::blocking(move || {
        crate::telemetry::render(&handle, store.as_ref(), &workflows, now)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `POST /v1/reload`: the same reload a saved file or SIGHUP asks for.
pub(super) async fn post_reload<S: Store>(
    State(app): State<Arc<App<S>>>,
) -> Result<Response, ApiError> {
    use crate::reload::Outcome;
    match app.reloader.reload().await {
        Some(Outcome::Reloaded { version, moved }) => Ok(Json(
            json!({ "version": version, "changed": true, "enrollments_moved": moved }),
        )
        .into_response()),
        Some(Outcome::Unchanged { version }) => {
            Ok(Json(json!({ "version": version, "changed": false })).into_response())
        }
        Some(Outcome::Failed(e)) => {
            Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reload_failed", e.message)
                    .with(json!({ "diagnostics": e.diagnostics })),
            )
        }
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_unavailable",
            "the reload loop has stopped",
        )),
    }
}

pub(super) async fn get_status<S: Store>(
    State(app): State<Arc<App<S>>>,
) -> Result<Json<Value>, ApiError> {
    let workflows = app.workflows.load();
    let reload = app.reload.get();
    Ok(Json(json!({
        "version": workflows.version,
        "loaded_at": time(reload.loaded_at),
        "workflows": app.workflows_dir,
        "files": workflows.files,
        "last_reload_error": reload.last_error,
        "reloads": { "succeeded": reload.succeeded, "failed": reload.failed },
        "events_stored": app.store.last_seq()?,
        "events_handled": app.store.cursor()?,
        "store_bytes": app.store.size_on_disk(),
        "store_write_failure": app.store.write_failure(),
        "unnamed_kinds": app.unnamed_kinds.listing(&workflows),
        "deliveries": app.delivery_health.status(),
        "mailboxes": app.mailbox_health.status(app.clock.now()),
        "engine": engine_status(&app)?,
    })))
}

/// The worker's state and the events it set aside (the latest few).
fn engine_status<S: Store>(app: &App<S>) -> Result<Value, ApiError> {
    const SHOWN: usize = 10;
    let mut status = app.engine_health.status();
    let set_aside = json!({
        "count": app.store.set_aside_count(100_000)?,
        "latest": app.store.set_aside_events(SHOWN)?,
    });
    // The stored bytes stay in the store (`dealflow backup` keeps them).
    let timers: Vec<Value> = app
        .store
        .set_aside_timers(SHOWN)?
        .into_iter()
        .map(|t| json!({ "id": t.id, "due_at": t.due_at, "error": t.error, "at": t.at }))
        .collect();
    let set_aside_timers = json!({
        "count": app.store.set_aside_timer_count(100_000)?,
        "latest": timers,
    });
    if let Some(fields) = status.as_object_mut() {
        fields.insert("set_aside".to_owned(), set_aside);
        fields.insert("set_aside_timers".to_owned(), set_aside_timers);
    }
    Ok(status)
}
