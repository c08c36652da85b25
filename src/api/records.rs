//! `/v1/records/{kind}/{id}`: a record with its history, tasks and scores,
//! its score ledger, and gated stage moves.

use super::extract::{MAX_PAGE, RecordPath, page_limit};
use super::{ApiError, App};
use crate::engine::{MoveResult, record_json};
use crate::state::TaskStatus;
use crate::store::Store;
use crate::store::TaskFilter;
use crate::worker::Command;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) async fn get_record<S: Store>(
    State(app): State<Arc<App<S>>>,
    RecordPath(key): RecordPath,
) -> Result<Json<Value>, ApiError> {
    let record = app
        .store
        .record(&key)?
        .ok_or_else(|| ApiError::not_found(format!("no record {key}")))?;
    let workflows = app.workflows.load();
    let open = TaskFilter {
        record: Some(key.clone()),
        status: Some(TaskStatus::Open),
        ..TaskFilter::default()
    };
    let now = app.clock.now();
    Ok(Json(json!({
        "record": record_json(&record, &workflows, now),
        "scores": score_explanations(app.store.as_ref(), &record, &workflows, now)?,
        "history": app.store.stage_history(&key)?,
        "enrollments": app.store.enrollments(&key)?,
        "open_tasks": app.store.tasks(&open, None, MAX_PAGE)?.items,
    })))
}

/// Entries of the ledger shown with the record; the rest is paged by
/// `GET /v1/records/{kind}/{id}/ledger`.
const LEDGER_SHOWN: usize = 10;

/// "Why is this lead 72?": per model, the score now, each rule's part of it
/// (decayed to now), and the latest ledger entries.
pub(crate) fn score_explanations<S: Store>(
    store: &S,
    record: &crate::state::Record,
    workflows: &crate::config::Workflows,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, crate::store::StoreError> {
    let mut out = serde_json::Map::new();
    for model in workflows
        .scoring
        .iter()
        .filter(|m| m.kind == record.key.kind)
    {
        let parts = crate::engine::scoring::parts_at(record, model, now);
        let score: f64 = parts.iter().map(|(_, v)| v).sum();
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let parts: Vec<Value> = parts
            .iter()
            .map(|(rule, v)| json!({ "rule": rule, "points": round(*v) }))
            .collect();
        let ledger = store.score_ledger(&record.key, &model.name, None, LEDGER_SHOWN)?;
        out.insert(
            model.name.clone(),
            json!({ "score": round(score), "parts": parts, "ledger": ledger.items, "ledger_next": ledger.next }),
        );
    }
    Ok(Value::Object(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LedgerQuery {
    model: String,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/records/{kind}/{id}/ledger?model=`: every contribution, newest first.
pub(super) async fn get_ledger<S: Store>(
    State(app): State<Arc<App<S>>>,
    RecordPath(key): RecordPath,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = app
        .store
        .score_ledger(&key, &q.model, q.after.as_deref(), page_limit(q.limit))?;
    Ok(Json(json!({ "ledger": page.items, "next": page.next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageRequest {
    to: String,
}

pub(super) async fn post_stage<S: Store>(
    State(app): State<Arc<App<S>>>,
    RecordPath(record): RecordPath,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: StageRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("expected {{\"to\": STAGE}}: {e}"),
        )
    })?;
    move_stage(&app, record, request.to).await.map(Json)
}

/// A gated move through the worker (the API's and the console's).
pub(crate) async fn move_stage<S: Store>(
    app: &App<S>,
    record: crate::state::RecordKey,
    to: String,
) -> Result<Value, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    app.worker
        .send(Command::Move {
            record: record.clone(),
            to: to.clone(),
            reply,
        })
        .await?;
    let result = answer.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is stopping; try again",
        )
    })??;
    match result {
        MoveResult::Moved { from, to } => {
            Ok(json!({ "record": record.to_string(), "from": from, "to": to }))
        }
        MoveResult::Refused(unmet) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stage_refused",
            format!("{record} cannot move to {to}: {}", unmet.join("; ")),
        )
        .with(json!({ "unmet": unmet }))),
        MoveResult::NotFound(why) => Err(ApiError::not_found(why)),
    }
}
