//! The tasks page: a rep's open tasks, overdue first, with a button that
//! completes one (through the event log, as the API does).

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::{PageQuery, done, record_href, value};
use crate::state::TaskStatus;
use crate::store::{Store, TaskFilter};
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// Open tasks read to sort (the queue beyond this is reached by filter).
const SHOWN: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    owner: Option<String>,
    notice: Option<String>,
}

/// `GET /tasks?owner=`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    PageQuery(q): PageQuery<TasksQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let now = app.clock.now();
    let owner = q.owner.filter(|o| !o.is_empty());
    let filter = TaskFilter {
        owner: owner.clone(),
        status: Some(TaskStatus::Open),
        record: None,
    };
    let mut tasks = app.store.tasks(&filter, None, SHOWN)?.items;
    // Overdue first, then by due time (no due time last), then oldest.
    tasks.sort_by_key(|t| {
        (
            t.due_at.is_none_or(|d| d >= now),
            t.due_at.is_none(),
            t.due_at,
            t.created_at,
        )
    });
    let rows: Vec<minijinja::Value> = tasks
        .iter()
        .map(|t| {
            minijinja::context! {
                task => value(t),
                record_href => record_href(&t.record),
                overdue => t.due_at.is_some_and(|d| d < now),
            }
        })
        .collect();
    let team: Vec<String> = app.workflows.load().team.people.keys().cloned().collect();
    let context = minijinja::context! {
        owner => owner, rows => rows, team => team, notice => q.notice, limit => SHOWN,
    };
    Ok(page(
        "tasks.html",
        layout(&console, &session, "tasks"),
        context,
    ))
}

#[derive(Deserialize)]
pub struct CompleteForm {
    #[serde(default)]
    owner: String,
}

/// `POST /tasks/{id}/complete`.
pub async fn complete<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(id): Path<String>,
    Form(form): Form<CompleteForm>,
) -> Result<Response, PageError> {
    crate::api::tasks::complete(&console.app, &id).await?;
    let back = if form.owner.is_empty() {
        "/tasks".to_owned()
    } else {
        let owner: String = url::form_urlencoded::byte_serialize(form.owner.as_bytes()).collect();
        format!("/tasks?owner={owner}")
    };
    Ok(done(&back, &format!("task {id} completed")))
}
