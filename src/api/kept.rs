//! Payloads kept as they arrived, for a source (`/hooks/{name}`) or the
//! SMS webhook, when they cannot be mapped: the row, its id, and the
//! headers worth keeping. Below both, so neither reaches into the other.

use crate::intake::verify::Headers;
use crate::state::RejectedPayload;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

/// Headers never kept with a payload: they carry credentials.
const SECRET_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// A payload kept for `source` (no reason yet), without the headers that
/// carry credentials.
pub(super) fn kept_payload(
    source: &str,
    body: &[u8],
    mut headers: Headers,
    now: DateTime<Utc>,
) -> RejectedPayload {
    headers.retain(|name, _| !SECRET_HEADERS.contains(&name.as_str()));
    RejectedPayload {
        id: kept_id(now),
        source: source.to_owned(),
        received_at: now,
        reason: String::new(),
        body: body.to_vec(),
        headers,
        delivery_id: None,
    }
}

/// Milliseconds since 1970 then random bits: ids sort by arrival, and two
/// payloads in the same millisecond still differ.
fn kept_id(now: DateTime<Utc>) -> String {
    let mut random = [0u8; 4];
    // Without randomness the time alone still orders them.
    let _ = getrandom::fill(&mut random);
    format!(
        "{:013}-{}",
        now.timestamp_millis().max(0),
        hex::encode(random)
    )
}

/// Lower-case names; repeated headers joined; bytes that are not UTF-8
/// replaced (signature headers are ASCII, so nothing they check is lost).
pub(super) fn headers(map: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}
