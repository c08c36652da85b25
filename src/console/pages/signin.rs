//! Signing in with the API token, and out.

use super::super::Console;
use super::super::render::{PageError, page};
use super::super::session::local_path;
use super::PageQuery;
use crate::store::Store;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /signin`: the form. A visitor without a session gets a guest
/// session first, so the form's CSRF token has something to belong to.
pub async fn form<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<SignInQuery>,
) -> Result<Response, PageError> {
    let now = console.app.clock.now();
    let (cookie, session) = match console.sessions.check(&headers, now) {
        Some(session) => (None, session),
        None => {
            let (cookie, session) = console.sessions.issue(false, now);
            (Some(cookie), session)
        }
    };
    let next = q
        .next
        .filter(|n| local_path(n))
        .unwrap_or_else(|| "/".to_owned());
    let layout = minijinja::context! { tab => "signin", csrf => console.sessions.csrf(&session) };
    let mut response = page(
        "signin.html",
        layout,
        minijinja::context! { next => next, failed => false },
    );
    if let Some(cookie) = cookie {
        console.sessions.attach(&mut response, &cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /signin`: the token right, a signed-in session and on to `next`;
/// wrong, the form again (401).
pub async fn sign_in<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    let now = console.app.clock.now();
    let session = console.sessions.check(&headers, now).ok_or_else(|| {
        PageError::new(
            StatusCode::FORBIDDEN,
            "open the sign-in page first (cookies must be allowed)",
        )
    })?;
    let next = if local_path(&form.next) {
        form.next.as_str()
    } else {
        "/"
    };
    let right = console
        .app
        .token
        .as_deref()
        .is_none_or(|token| crate::api::token_matches(&form.token, token));
    if !right {
        tracing::info!("A console sign-in gave a wrong token.");
        let layout =
            minijinja::context! { tab => "signin", csrf => console.sessions.csrf(&session) };
        let mut response = page(
            "signin.html",
            layout,
            minijinja::context! { next => next, failed => true },
        );
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let (cookie, _) = console.sessions.issue(true, now);
    let mut response = Redirect::to(next).into_response();
    console.sessions.attach(&mut response, &cookie);
    Ok(response)
}

/// `POST /signout`.
pub async fn sign_out<S: Store>(
    State(console): State<Arc<Console<S>>>,
) -> Result<Response, PageError> {
    let mut response = Redirect::to("/signin").into_response();
    console.sessions.detach(&mut response);
    Ok(response)
}
