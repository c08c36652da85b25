//! The sources and mailboxes page: each source's rejected payloads (and the
//! texts kept by `/hooks/sms`) with a replay button, and what each mailbox
//! is doing.

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::{PageQuery, done};
use crate::store::Store;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use std::sync::Arc;

/// Kept payloads listed per source.
const SHOWN: usize = 20;
/// Counting stops here ("1000+").
const COUNTED: usize = 1000;

/// `GET /sources`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    PageQuery(q): PageQuery<super::NoticeQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let workflows = app.workflows.load();
    let mut sources = Vec::new();
    // Texts from numbers no record was texted at are kept under the
    // built-in source `sms` (SPEC §3.12).
    let texts = workflows
        .settings
        .sms
        .as_ref()
        .map(|_| crate::api::SMS_SOURCE.to_owned());
    for name in workflows.sources.keys().cloned().chain(texts) {
        let name = &name;
        let kept = app.store.rejected_payloads(name, None, SHOWN)?;
        let rejected: Vec<serde_json::Value> = kept
            .items
            .iter()
            .map(|p| crate::api::sources::shown(p, &workflows.secrets))
            .collect();
        sources.push(minijinja::context! {
            name => name,
            count => app.store.rejected_count(name, COUNTED)?,
            rejected => super::value(&rejected),
        });
    }
    let context = minijinja::context! {
        sources => sources,
        counted => COUNTED,
        mailboxes => super::value(&app.mailbox_health.status(app.clock.now())),
        notice => q.notice,
    };
    Ok(page(
        "sources.html",
        layout(&console, &session, "sources"),
        context,
    ))
}

/// `POST /sources/{name}/rejected/{id}/replay`.
pub async fn replay<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let answer = crate::api::sources::replay_kept(&console.app, &name, &id).await?;
    let events = answer["events"].as_u64().unwrap_or(0);
    Ok(done(
        "/sources",
        &format!("{id} replayed: {events} event(s)"),
    ))
}
