//! `/v1/tasks`: listing by owner and status, and completing a task.

use super::extract::page_limit;
use super::{ApiError, App};
use crate::state::TaskStatus;
use crate::store::Store;
use crate::store::TaskFilter;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TaskQuery {
    owner: Option<String>,
    status: Option<String>,
    unassigned: Option<bool>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn get_tasks<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("open") => Some(TaskStatus::Open),
        Some("completed") => Some(TaskStatus::Completed),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status must be open, completed or all, not \"{other}\""),
            ));
        }
    };
    let owner = if q.unassigned == Some(true) {
        Some(String::new())
    } else {
        q.owner
    };
    let filter = TaskFilter {
        owner,
        status,
        record: None,
    };
    let page = app
        .store
        .tasks(&filter, q.after.as_deref(), page_limit(q.limit))?;
    Ok(Json(json!({ "tasks": page.items, "next": page.next })))
}

pub(super) async fn complete_task<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (status, task) = complete(&app, &id).await?;
    Ok((status, Json(json!({ "task": task }))).into_response())
}

/// Completes a task through the event log and waits (a while) for the
/// engine to have handled it: `200` then, `202` when it is still queued.
pub(crate) async fn complete<S: Store>(
    app: &App<S>,
    id: &str,
) -> Result<(StatusCode, Option<crate::state::Task>), ApiError> {
    let task = app
        .store
        .task(id)?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    if task.status == TaskStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            format!("task {id} was completed already"),
        ));
    }
    let event = crate::state::NewEvent::raised(
        crate::state::BuiltinEvent::TaskCompleted,
        task.record.clone(),
        json!({ "task_id": id }),
        app.clock.now(),
        Some(format!("task-completed-{id}")),
    );
    let appended = app.appender.append(vec![event]).await?;
    // The event is durable either way; past the wait the answer says so
    // with 202 instead of holding the request open.
    let seq = appended.first().map_or(0, |a| a.seq);
    let handled = tokio::time::timeout(COMPLETION_WAIT, app.worker.handled(seq))
        .await
        .is_ok();
    let task = app.store.task(id)?;
    let status = if handled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, task))
}

/// How long completing a task waits for the engine before answering 202.
const COMPLETION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
