//! `/v1/runs`: what each rule saw and did, newest first.

use super::extract::{page_limit, record_param};
use super::{ApiError, App};
use crate::store::RunFilter;
use crate::store::Store;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunQuery {
    record: Option<String>,
    rule: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn get_runs<S: Store>(
    State(app): State<Arc<App<S>>>,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = RunFilter {
        record: record_param(q.record.as_deref())?,
        rule: q.rule,
    };
    let page = app
        .store
        .runs(&filter, q.after.as_deref(), page_limit(q.limit))?;
    let mut runs = json!(page.items);
    // Runs of a version that is no longer loaded were masked when written
    // (the engine redacts details); this catches what the running one knows.
    app.workflows.load().secrets.redact_json(&mut runs);
    Ok(Json(json!({ "runs": runs, "next": page.next })))
}
