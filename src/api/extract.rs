//! What many routes share: page sizes, record keys, and the one way a handler
//! runs work that reads whole tables.

use super::ApiError;
use crate::state::RecordKey;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

/// Largest page of a listing.
pub(super) const MAX_PAGE: usize = 500;

/// The value of `name` in a URL's query, percent-decoded as any form value.
pub(super) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
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
    if let Some(c) = crate::intake::event::control_character(&kind)
        .or_else(|| crate::intake::event::control_character(&id))
    {
        return Err(ApiError::bad_request(
            "invalid_record",
            format!("a record's kind and id are printable text, not {c:?}"),
        ));
    }
    Ok(RecordKey { kind, id })
}

/// The record a `/records/{kind}/{id}` path names, checked like every
/// record key (see [`record_key`]).
pub(super) struct RecordPath(pub RecordKey);

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path((kind, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        record_key(kind, id)
            .map(RecordPath)
            .map_err(IntoResponse::into_response)
    }
}

/// A listing's page size from its `?limit=`: 100 unless asked, at most
/// [`MAX_PAGE`]. (`?after=` is each listing's own cursor, passed as is.)
pub(super) fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}

/// Runs work that reads whole tables (a report, the metrics' gauges, a
/// plan) on the blocking pool, so it never stalls the threads serving other
/// requests. Reads of one key or one page run inline: the store serves them
/// from memory (the policy is written down in `store`'s module head).
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::task_failed)
}

/// Commits changes and flushes them: nothing is answered before they are
/// durable.
pub(super) async fn commit_durably<S: crate::store::Store>(
    app: &super::App<S>,
    changes: impl Into<crate::store::Changes>,
) -> Result<(), super::ApiError> {
    app.store.commit(changes.into())?;
    app.store.flush().await?;
    Ok(())
}
