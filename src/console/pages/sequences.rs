//! The sequences page: per sequence and step, enrolled, sent, replied,
//! bounced, unsubscribed and the reply rate.

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::value;
use crate::store::Store;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

/// `GET /sequences`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let report = console.figures.sequences(console.app.store.clone()).await?;
    let workflows = console.app.workflows.load();
    // Steps in the order the sequence runs them; steps no longer in the
    // running workflows (renamed, removed) after them.
    let sequences: Vec<minijinja::Value> = report
        .iter()
        .map(|(name, figures)| {
            let order: Vec<&str> = workflows.sequences.get(name).map_or(Vec::new(), |s| {
                s.steps.iter().filter_map(|st| st.id.as_deref()).collect()
            });
            let mut steps: Vec<(&String, &crate::report::StepFigures)> =
                figures.steps.iter().collect();
            steps.sort_by_key(|(id, _)| order.iter().position(|o| o == id).unwrap_or(usize::MAX));
            let steps: Vec<minijinja::Value> = steps
                .into_iter()
                .map(|(id, f)| minijinja::context! { id => id, figures => value(f) })
                .collect();
            minijinja::context! { name => name, figures => value(figures), steps => steps }
        })
        .collect();
    Ok(page(
        "sequences.html",
        layout(&console, &session, "sequences"),
        minijinja::context! { sequences => sequences },
    ))
}
