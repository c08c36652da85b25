//! One module per page (or pair of pages), each a handler that gathers
//! what its template shows. Shared here: the posted form, the period a
//! page covers, and how a record is named in a path.

pub mod outbox;
pub mod pipeline;
pub mod record;
pub mod sequences;
pub mod signin;
pub mod sources;
pub mod tasks;
pub mod workflows;

use super::render::PageError;
use crate::state::RecordKey;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A page's query string, or a 400 page saying what is wrong with it
/// (axum's own `Query` would answer in plain text).
pub struct PageQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for PageQuery<T>
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, PageError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| PageQuery(q))
            .map_err(|e| PageError::bad_request(e.body_text()))
    }
}

/// The query of a page that only shows the notice a form left.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeQuery {
    notice: Option<String>,
}

/// The period pages cover unless asked otherwise.
pub const DEFAULT_PERIOD: &str = "30d";

/// The start of a page's period, `?since=30d` (the default) back from
/// `now`, or a 400 page saying what is wrong.
pub fn period_start(since: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, PageError> {
    let back = crate::config::values::parse_duration(since)
        .map_err(|e| PageError::bad_request(format!("since: {e}")))?;
    chrono::Duration::from_std(back)
        .ok()
        .and_then(|back| now.checked_sub_signed(back))
        .ok_or_else(|| PageError::bad_request("since reaches back before the calendar begins"))
}

/// A record named by a path, refused as the API refuses it.
fn record_key(kind: String, id: String) -> Result<RecordKey, PageError> {
    if let Some(c) = crate::intake::event::control_character(&kind)
        .or_else(|| crate::intake::event::control_character(&id))
    {
        return Err(PageError::bad_request(format!(
            "a record's kind and id are printable text, not {c:?}"
        )));
    }
    Ok(RecordKey { kind, id })
}

/// The path of a record's page, each part percent-encoded.
pub fn record_href(key: &RecordKey) -> String {
    format!("/records/{}/{}", encode(&key.kind), encode(&key.id))
}

/// A path segment, percent-encoded.
fn encode(part: &str) -> String {
    url::form_urlencoded::byte_serialize(part.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// After a form: back to `to` (a GET, so reloading the page does not post
/// again), with a notice to show.
fn done(to: &str, notice: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let notice: String = url::form_urlencoded::byte_serialize(notice.as_bytes()).collect();
    Redirect::to(&format!("{to}{sep}notice={notice}")).into_response()
}

/// `minijinja` reads any serializable value.
fn value<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}
