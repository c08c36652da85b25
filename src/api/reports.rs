//! `/v1/reports/{pipeline|sequences|owners|forecast}`.

use super::{ApiError, App};
use crate::store::Store;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    since: Option<String>,
    pipeline: Option<String>,
}

/// `GET /v1/reports/{pipeline|sequences|owners}?since=30d`.
pub(super) async fn get_report<S: Store>(
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
    let report = super::extract::blocking(move || -> Result<Value, crate::store::StoreError> {
        let store = store.as_ref();
        Ok(match name.as_str() {
            "pipeline" => {
                let mut reports = crate::report::pipeline_report(store, &workflows, since)?;
                reports.retain(|r| q.pipeline.as_ref().is_none_or(|p| r.pipeline == *p));
                json!(reports)
            }
            "sequences" => json!(crate::report::sequences_report(store)?),
            "owners" => json!(crate::report::owners_report(store, &workflows, since, now)?),
            "forecast" => {
                let mut reports = crate::report::forecast::forecast_report(store, &workflows, now)?;
                reports.retain(|r| q.pipeline.as_ref().is_none_or(|p| r.pipeline == *p));
                json!(reports)
            }
            _ => Value::Null,
        })
    })
    .await??;
    if report.is_null() {
        return Err(ApiError::not_found(
            "no such report; there are pipeline, sequences, owners and forecast",
        ));
    }
    Ok(Json(report))
}
