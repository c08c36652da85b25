//! Who may call the API: a bearer token (or `?token=` where a header
//! cannot be set, as in an inbound-mail webhook), compared in constant time.

use super::{ApiError, App};
use crate::store::Store;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn require_token<S: Store>(
    State(app): State<Arc<App<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned);
    // Mail providers' inbound webhooks often cannot set headers (SPEC §7).
    let given = bearer.or_else(|| {
        request
            .uri()
            .path()
            .ends_with("/inbound/email")
            .then(|| query_token(request.uri().query()))
            .flatten()
    });
    let given = given.as_deref();
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer $DEALFLOW_TOKEN",
        )
        .into_response()
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme's
/// name is case-insensitive (RFC 9110), so `bearer` works too.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `?token=`, percent-decoded as any form value.
fn query_token(query: Option<&str>) -> Option<String> {
    super::extract::query_value(query, "token")
}

/// Whether `given` is the API token (the console's sign-in asks this too).
pub fn token_matches(given: &str, token: &str) -> bool {
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }

    #[test]
    fn a_query_token_is_percent_decoded() {
        assert_eq!(
            query_token(Some("a=1&token=x%2By%2Fz%3D%25")),
            Some("x+y/z=%".to_owned())
        );
        assert_eq!(query_token(Some("a=1")), None);
        assert_eq!(query_token(None), None);
    }
}
