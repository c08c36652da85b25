//! The workflows page: the running version and its files, the last reload
//! error with file:line:col, and what reloading the folder on disk now
//! would change (the same plan `dealflow plan` shows).

use super::super::render::{PageError, page};
use super::super::session::Session;
use super::super::{Console, layout};
use super::{PageQuery, done, value};
use crate::config::diagnostic::Severity;
use crate::store::Store;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

/// `GET /workflows`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<Session>,
    PageQuery(q): PageQuery<super::NoticeQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let running = app.workflows.load_full();
    let reload = app.reload.get();
    let dir = std::path::PathBuf::from(&app.workflows_dir);
    let store = app.store.clone();
    let plan_of = running.clone();
    // The folder may be broken right now; the page still shows what runs.
    let plan = tokio::task::spawn_blocking(move || {
        let (new, diagnostics) =
            crate::config::load(&dir, &crate::config::environment::ProcessEnvironment);
        match new {
            Some(new) => crate::engine::reload_plan::plan(&plan_of, &new, store.as_ref())
                .map_err(crate::store::StoreError::from)
                .map(|plan| minijinja::context! { text => plan.to_string(), refused => plan.refusal().is_some() }),
            None => Ok(minijinja::context! {
                errors => diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            }),
        }
    })
    .await??;
    let context = minijinja::context! {
        version => running.version.clone(),
        folder => app.workflows_dir.clone(),
        files => value(&running.files),
        loaded_at => crate::engine::time(reload.loaded_at),
        last_error => value(&reload.last_error),
        succeeded => reload.succeeded,
        failed => reload.failed,
        plan => plan,
        notice => q.notice,
    };
    Ok(page(
        "workflows.html",
        layout(&console, &session, "workflows"),
        context,
    ))
}

/// `POST /workflows/reload`: reload the folder now.
pub async fn reload<S: Store>(
    State(console): State<Arc<Console<S>>>,
) -> Result<Response, PageError> {
    use crate::reload::Outcome;
    let notice = match console.app.reloader.reload().await {
        Some(Outcome::Reloaded { version, moved }) => {
            format!("reloaded: version {version}, {moved} enrollment(s) moved")
        }
        Some(Outcome::Unchanged { version }) => format!("nothing changed: version {version} runs"),
        Some(Outcome::Failed(e)) => format!("reload refused: {}", e.message),
        None => "the reload loop has stopped".to_owned(),
    };
    Ok(done("/workflows", &notice))
}
