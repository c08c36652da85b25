//! `POST /v1/plan`: what a reload of a folder would change, as a dry run
//! of the plan the worker applies. The caller sends the folder's files;
//! the daemon compiles them as a reload would (its own environment for
//! `${VAR}`) and plans against its running set and its store.

use super::{ApiError, App};
use crate::config::diagnostic::Severity;
use crate::store::Store;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The folder to plan for: relative path → text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanRequest {
    files: BTreeMap<String, String>,
}

/// Answers `{"plan": …, "text": "…", "refused": bool}`, or `422` with the
/// diagnostics when the folder does not compile.
pub(super) async fn post_plan<S: Store>(
    State(app): State<Arc<App<S>>>,
    Json(request): Json<PlanRequest>,
) -> Result<Json<Value>, ApiError> {
    let folder = tempfile::tempdir().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot make a folder to compile in: {e}"),
        )
    })?;
    for (path, text) in &request.files {
        write_file(folder.path(), path, text)?;
    }
    let running = app.workflows.load_full();
    let store = app.store.clone();
    let answer = super::extract::blocking(move || {
        let dir = folder.path();
        let (new, diagnostics) =
            crate::config::load(dir, &crate::config::environment::ProcessEnvironment);
        let Some(new) = new else {
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string().replace(&format!("{}/", dir.display()), ""))
                .collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_workflows",
                format!("the folder has {} error(s)", errors.len()),
            )
            .with(json!({ "diagnostics": errors })));
        };
        let plan = crate::engine::reload_plan::plan(&running, &new, store.as_ref())
            .map_err(crate::store::StoreError::from)?;
        Ok(json!({ "text": plan.to_string(), "refused": plan.refusal().is_some(), "plan": plan }))
    })
    .await??;
    Ok(Json(answer))
}

/// Writes one sent file under `folder`, refusing paths that would leave it.
fn write_file(folder: &Path, path: &str, text: &str) -> Result<(), ApiError> {
    let relative = PathBuf::from(path);
    let inside = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !inside || path.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_path",
            format!("{path:?} is not a relative path inside the folder"),
        ));
    }
    let target = folder.join(relative);
    let written = target
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&target, text));
    written.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot write {path}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_paths_stay_inside_the_folder() {
        let folder = tempfile::tempdir().unwrap();
        for bad in [
            "../x.yaml",
            "/etc/x.yaml",
            "a/../../x.yaml",
            "",
            "a\nb.yaml",
        ] {
            assert!(write_file(folder.path(), bad, "x").is_err(), "{bad:?}");
        }
        write_file(folder.path(), "templates/intro.md", "hi").unwrap();
        assert_eq!(
            std::fs::read_to_string(folder.path().join("templates/intro.md")).unwrap(),
            "hi"
        );
    }
}
