//! A record's page: fields, owner, stage history as a timeline, open
//! tasks, enrollments, each score with its ledger, runs with the values
//! their conditions saw, and every email and webhook with its state and a
//! preview; and a gated stage move.

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::{done, record_href, record_key, value};
use crate::state::TaskStatus;
use crate::store::{OutboxFilter, RunFilter, Store, TaskFilter};
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// Runs and sends shown on the page (newest first).
const SHOWN: usize = 50;

/// `GET /records/{kind}/{id}`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let key = record_key(kind, id)?;
    let app = &console.app;
    let store = app.store.as_ref();
    let record = store
        .record(&key)?
        .ok_or_else(|| PageError::not_found(format!("no record {key}")))?;
    let workflows = app.workflows.load_full();
    let now = app.clock.now();
    let secrets = &workflows.secrets;
    let open = TaskFilter {
        record: Some(key.clone()),
        status: Some(TaskStatus::Open),
        ..TaskFilter::default()
    };
    let mut fields = serde_json::Value::Object(record.fields.clone());
    secrets.redact_json(&mut fields);
    let mut runs = serde_json::json!(
        store
            .runs(
                &RunFilter {
                    record: Some(key.clone()),
                    rule: None
                },
                None,
                SHOWN
            )?
            .items
    );
    secrets.redact_json(&mut runs);
    let sends: Vec<serde_json::Value> = store
        .outbox_matching(
            &OutboxFilter {
                record: Some(key.clone()),
                status: None,
            },
            None,
            SHOWN,
        )?
        .items
        .iter()
        .map(|row| crate::api::outbox::shown(row, &workflows, &app.unsubscribe))
        .collect();
    let stages: Vec<String> = record
        .pipeline
        .as_deref()
        .and_then(|p| workflows.pipelines.values().find(|x| x.name == p))
        .map_or(Vec::new(), |p| {
            p.stages.iter().map(|s| s.name.clone()).collect()
        });
    let context = minijinja::context! {
        key => key.to_string(),
        href => record_href(&key),
        owner => record.owner.clone(),
        pipeline => record.pipeline.clone(),
        days_in_stage => record.days_in_stage(now),
        stage => record.stage.clone(),
        created_at => crate::engine::time(record.created_at),
        fields => value(&fields),
        history => value(&store.stage_history(&key)?),
        tasks => value(&store.tasks(&open, None, SHOWN)?.items),
        enrollments => value(&store.enrollments(&key)?),
        scores => value(&crate::api::records::score_explanations(store, &record, &workflows, now)?),
        runs => value(&runs),
        sends => value(&sends),
        stages => stages,
    };
    Ok(page(
        "record.html",
        layout(&console, &session, "pipeline"),
        context,
    ))
}

#[derive(Deserialize)]
pub struct MoveForm {
    #[serde(default)]
    to: String,
}

/// `POST /records/{kind}/{id}/stage`: the same gated move as the API.
pub async fn move_stage<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((kind, id)): Path<(String, String)>,
    Form(form): Form<MoveForm>,
) -> Result<Response, PageError> {
    let key = record_key(kind, id)?;
    crate::api::records::move_stage(&console.app, key.clone(), form.to.clone()).await?;
    Ok(done(&record_href(&key), &format!("moved to {}", form.to)))
}
