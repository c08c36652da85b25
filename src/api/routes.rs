//! The routes.

use super::events::parse_event;
use super::{ApiError, App};
use crate::engine::{MoveResult, record_json, time};
use crate::state::{RecordKey, TaskStatus};
use crate::store::{RunFilter, Store, TaskFilter};
use crate::worker::Command;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest page of a listing.
const MAX_PAGE: usize = 500;

/// All routes of the API.
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    let v1 = Router::new()
        .route("/events", post(post_events::<S>))
        .route("/records/{kind}/{id}", get(get_record::<S>))
        .route("/records/{kind}/{id}/stage", post(post_stage::<S>))
        .route("/records/{kind}/{id}/ledger", get(get_ledger::<S>))
        .route("/tasks", get(get_tasks::<S>))
        .route("/tasks/{id}/complete", post(complete_task::<S>))
        .route("/runs", get(get_runs::<S>))
        .route("/status", get(get_status::<S>))
        .route("/reload", post(post_reload::<S>))
        .route("/workflows", get(get_workflows::<S>))
        .route("/reports/{name}", get(get_report::<S>))
        .route("/outbox", get(super::mail::get_outbox::<S>))
        .route("/inbound/email", post(super::mail::post_inbound::<S>))
        .route("/suppressions", get(super::suppressions::list::<S>))
        .route(
            "/suppressions/{address}",
            axum::routing::delete(super::suppressions::remove::<S>),
        )
        .layer(middleware::from_fn_with_state(
            app.clone(),
            require_token::<S>,
        ));
    Router::new()
        .nest("/v1", v1)
        .route(
            "/u/{token}",
            get(super::mail::unsubscribe_page::<S>).post(super::mail::unsubscribe::<S>),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(get_metrics::<S>))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(app.max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            app.read_timeout,
        ))
        .layer(middleware::map_response(super::error::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::error::panicked,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!("request", method = %request.method(), uri = %loggable_uri(request.uri()))
            }),
        )
        .with_state(app)
}

/// A request's path and query as logs may show them: an unsubscribe token
/// (`/u/TOKEN`) and a `?token=` query value would let anyone reading the
/// logs unsubscribe people or call the API.
fn loggable_uri(uri: &axum::http::Uri) -> String {
    let path = match uri.path().strip_prefix("/u/") {
        Some(_) => "/u/(token)",
        None => uri.path(),
    };
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=(hidden)"
            } else {
                pair
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

async fn require_token<S: Store>(
    State(app): State<Arc<App<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned);
    // Mail providers' inbound webhooks often cannot set headers (SPEC §7).
    let given = bearer.or_else(|| {
        request
            .uri()
            .path()
            .ends_with("/inbound/email")
            .then(|| query_token(request.uri().query()))
            .flatten()
    });
    let given = given.as_deref();
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer $DEALFLOW_TOKEN",
        )
        .into_response()
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme's
/// name is case-insensitive (RFC 9110), so `bearer` works too.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|t| {
            t.replace("%2F", "/")
                .replace("%2B", "+")
                .replace("%3D", "=")
        })
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn post_events<S: Store>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let single = !value.is_array();
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::bad_request(
                "empty_batch",
                "the array holds no events",
            ));
        }
        Value::Array(items) => items,
        other => vec![other],
    };
    let workflows = app.workflows.load();
    let now = app.clock.now();
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.iter().enumerate() {
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
                items.len()
            )
        };
        return Err(
            ApiError::bad_request("invalid_event", message).with(json!({ "events": problems }))
        );
    }
    for e in &events {
        crate::telemetry::event_ingested(&e.event_type, &workflows);
    }
    let unnamed = super::UnnamedKinds::find(&events, &workflows);
    let appended = app.appender.append(events).await?;
    app.worker.wake();
    app.unnamed_kinds.count(unnamed, &appended);
    let answers: Vec<Value> = appended
        .iter()
        .map(|a| json!({ "id": a.id, "duplicate": a.duplicate }))
        .collect();
    let body = if single {
        answers[0].clone()
    } else {
        json!({ "accepted": answers.len(), "events": answers })
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_record<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = record_key(kind, id)?;
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
fn score_explanations<S: Store>(
    store: &S,
    record: &crate::state::Record,
    workflows: &crate::config::Workflows,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, ApiError> {
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
struct LedgerQuery {
    model: String,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/records/{kind}/{id}/ledger?model=`: every contribution, newest first.
async fn get_ledger<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = record_key(kind, id)?;
    let paging = Paging {
        limit: q.limit,
        after: q.after,
    };
    let page = app
        .store
        .score_ledger(&key, &q.model, paging.after.as_deref(), paging.limit())?;
    Ok(Json(json!({ "ledger": page.items, "next": page.next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageRequest {
    to: String,
}

async fn post_stage<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path((kind, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: StageRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("expected {{\"to\": STAGE}}: {e}"),
        )
    })?;
    let record = record_key(kind, id)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    app.worker
        .send(Command::Move {
            record: record.clone(),
            to: request.to.clone(),
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
        MoveResult::Moved { from, to } => Ok(Json(
            json!({ "record": record.to_string(), "from": from, "to": to }),
        )),
        MoveResult::Refused(unmet) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stage_refused",
            format!(
                "{record} cannot move to {}: {}",
                request.to,
                unmet.join("; ")
            ),
        )
        .with(json!({ "unmet": unmet }))),
        MoveResult::NotFound(why) => Err(ApiError::not_found(why)),
    }
}

/// `?limit=&after=` of every listing.
#[derive(Deserialize)]
pub(super) struct Paging {
    pub limit: Option<usize>,
    pub after: Option<String>,
}

/// `?record=KIND/ID`.
pub(super) fn record_param(text: Option<&str>) -> Result<Option<RecordKey>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let (kind, id) = text.split_once('/').ok_or_else(|| {
        ApiError::bad_request("invalid_query", "record must be KIND/ID, e.g. lead/L1")
    })?;
    record_key(kind.to_owned(), id.to_owned()).map(Some)
}

/// A record named in a path or query. Control characters are refused as
/// at ingest: they can never name a stored record, and NUL separates the
/// parts of store keys.
fn record_key(kind: String, id: String) -> Result<RecordKey, ApiError> {
    if let Some(c) =
        super::events::control_character(&kind).or_else(|| super::events::control_character(&id))
    {
        return Err(ApiError::bad_request(
            "invalid_record",
            format!("a record's kind and id are printable text, not {c:?}"),
        ));
    }
    Ok(RecordKey { kind, id })
}

impl Paging {
    pub(super) fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, MAX_PAGE)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    owner: Option<String>,
    status: Option<String>,
    unassigned: Option<bool>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn get_tasks<S: Store>(
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
    let paging = Paging {
        limit: q.limit,
        after: q.after,
    };
    let page = app
        .store
        .tasks(&filter, paging.after.as_deref(), paging.limit())?;
    Ok(Json(json!({ "tasks": page.items, "next": page.next })))
}

async fn complete_task<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = app
        .store
        .task(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    if task.status == TaskStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            format!("task {id} was completed already"),
        ));
    }
    let event = crate::state::NewEvent {
        id: Some(format!("task-completed-{id}")),
        event_type: "task.completed".to_owned(),
        record: task.record.clone(),
        fields: Default::default(),
        data: serde_json::Map::from_iter([("task_id".to_owned(), json!(id))]),
        occurred_at: app.clock.now(),
        depth: 0,
    };
    let appended = app.appender.append(vec![event]).await?;
    app.worker.wake();
    // The event is durable either way; past the wait the answer says so
    // with 202 instead of holding the request open.
    let seq = appended.first().map_or(0, |a| a.seq);
    let handled = tokio::time::timeout(COMPLETION_WAIT, app.worker.handled(seq))
        .await
        .is_ok();
    let task = app.store.task(&id)?;
    let status = if handled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(json!({ "task": task }))).into_response())
}

/// How long completing a task waits for the engine before answering 202.
const COMPLETION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    record: Option<String>,
    rule: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn get_runs<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = RunFilter {
        record: record_param(q.record.as_deref())?,
        rule: q.rule,
    };
    let paging = Paging {
        limit: q.limit,
        after: q.after,
    };
    let page = app
        .store
        .runs(&filter, paging.after.as_deref(), paging.limit())?;
    let mut runs = json!(page.items);
    // Runs of a version that is no longer loaded were masked when written
    // (the engine redacts details); this catches what the running one knows.
    app.workflows.load().secrets.redact_json(&mut runs);
    Ok(Json(json!({ "runs": runs, "next": page.next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    since: Option<String>,
    pipeline: Option<String>,
}

/// `GET /v1/reports/{pipeline|sequences|owners}?since=30d`.
async fn get_report<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = crate::config::values::parse_duration(q.since.as_deref().unwrap_or("30d"))
        .map_err(|e| ApiError::bad_request("invalid_query", format!("since: {e}")))?;
    let now = app.clock.now();
    let since = chrono::Duration::from_std(since)
        .ok()
        .and_then(|back| now.checked_sub_signed(back))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "since reaches back before the calendar begins",
            )
        })?;
    let workflows = app.workflows.load_full();
    if let Some(p) = &q.pipeline
        && !workflows
            .pipelines
            .values()
            .any(|pipeline| pipeline.name == *p)
    {
        return Err(ApiError::not_found(format!("no pipeline {p}")));
    }
    let store = app.store.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<Value, crate::store::StoreError> {
        let store = store.as_ref();
        Ok(match name.as_str() {
            "pipeline" => {
                let mut reports = crate::report::pipeline_report(store, &workflows, since)?;
                reports.retain(|r| q.pipeline.as_ref().is_none_or(|p| r.pipeline == *p));
                json!(reports)
            }
            "sequences" => json!(crate::report::sequences_report(store)?),
            "owners" => json!(crate::report::owners_report(store, &workflows, since, now)?),
            _ => Value::Null,
        })
    })
    .await
    .map_err(|e| crate::store::StoreError::Backend(e.to_string()))??;
    if report.is_null() {
        return Err(ApiError::not_found(
            "no such report; there are pipeline, sequences and owners",
        ));
    }
    Ok(Json(report))
}

/// `GET /metrics`: Prometheus text format.
async fn get_metrics<S: Store>(State(app): State<Arc<App<S>>>) -> Result<Response, ApiError> {
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
    let text = tokio::task::spawn_blocking(move || {
        crate::telemetry::render(&handle, store.as_ref(), &workflows, now)
    })
    .await
    .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /v1/workflows`: the running set described for `dealflow plan`.
async fn get_workflows<S: Store>(State(app): State<Arc<App<S>>>) -> Result<Json<Value>, ApiError> {
    let workflows = app.workflows.load_full();
    let store = app.store.clone();
    let summary = tokio::task::spawn_blocking(move || {
        crate::reload::plan::running_summary(&workflows, store.as_ref())
    })
    .await
    .map_err(|e| crate::store::StoreError::Backend(e.to_string()))??;
    Ok(Json(serde_json::to_value(summary).unwrap_or(Value::Null)))
}

/// `POST /v1/reload`: the same reload a saved file or SIGHUP asks for.
async fn post_reload<S: Store>(State(app): State<Arc<App<S>>>) -> Result<Response, ApiError> {
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

async fn get_status<S: Store>(State(app): State<Arc<App<S>>>) -> Result<Json<Value>, ApiError> {
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
        "unnamed_kinds": app.unnamed_kinds.listing(&workflows),
        "deliveries": app.delivery_health.status(),
    })))
}

#[cfg(test)]
mod tests {
    use super::loggable_uri;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        use super::bearer_token;
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }

    #[test]
    fn tokens_never_reach_the_log() {
        let shown = |u: &str| loggable_uri(&u.parse().unwrap());
        assert_eq!(shown("/u/abc.def"), "/u/(token)");
        assert_eq!(
            shown("/v1/inbound/email?token=s3cret&x=1"),
            "/v1/inbound/email?token=(hidden)&x=1"
        );
        assert_eq!(shown("/v1/runs?record=lead/L1"), "/v1/runs?record=lead/L1");
    }
}
