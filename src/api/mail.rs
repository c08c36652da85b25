//! Email-facing routes: the unsubscribe page and its one-click POST
//! (RFC 8058), and inbound mail (replies, bounces, auto-replies).

use super::extract::commit_durably;
use super::{ApiError, App};
use crate::delivery::inbound::{self, Inbound};
use crate::state::{Delivery, OutboxEntry};
use crate::store::Store;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The row and address an unsubscribe token stands for.
fn unsubscribe_target<S: Store>(
    app: &App<S>,
    token: &str,
) -> Result<(OutboxEntry, String), Box<Response>> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            page(
                "Link not recognised",
                "This unsubscribe link is not valid. If you copied it, check that it is complete.",
            ),
        )
            .into_response()
    };
    let not_found = || Box::new(not_found());
    let id = app.unsubscribe.verify(token).ok_or_else(not_found)?;
    let row = match app.store.outbox_entry(&id) {
        Ok(Some(row)) => row,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(Box::new(ApiError::from(e).into_response())),
    };
    match &row.delivery {
        Delivery::Email { to, .. } => {
            let to = to.clone();
            Ok((row, to))
        }
        Delivery::Webhook { .. } | Delivery::Sms { .. } => Err(not_found()),
    }
}

/// `GET /u/{token}`: a page with a button; never unsubscribes by itself,
/// since link scanners follow every link in a message.
pub(super) async fn unsubscribe_page<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(token): Path<String>,
) -> Response {
    match unsubscribe_target(&app, &token) {
        Err(r) => *r,
        Ok((_, to)) => page(
            "Unsubscribe",
            &format!(
                "Stop all emails to <b>{}</b>?</p><form method=\"post\"><button type=\"submit\">Unsubscribe</button></form><p>",
                escape(&to)
            ),
        )
        .into_response(),
    }
}

/// `POST /u/{token}`: suppresses the address at once (the next send checks
/// it) and records `email.unsubscribed`, in one flushed commit.
pub(super) async fn unsubscribe<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(token): Path<String>,
) -> Response {
    let (row, to) = match unsubscribe_target(&app, &token) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let changes = crate::delivery::unsubscribe::unsubscribed(&row, &to, "link", app.clock.now());
    if let Err(e) = commit_durably(&app, changes).await {
        return e.into_response();
    }
    page(
        "Unsubscribed",
        &format!("{} will get no more emails from us.", escape(&to)),
    )
    .into_response()
}

/// `POST /v1/inbound/email`: a raw RFC 822 message from an inbound-mail
/// webhook or poller.
pub(super) async fn post_inbound<S: Store>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(message) = inbound::classify(&body) else {
        return Err(ApiError::bad_request(
            "invalid_message",
            "the body is not an RFC 822 message (send the raw message as message/rfc822)",
        ));
    };
    if let Inbound::Unsubscribe { token } = &message {
        let answer = unsubscribe(State(app.clone()), Path(token.clone())).await;
        let matched = answer.status() == StatusCode::OK;
        return Ok(Json(json!({ "kind": "unsubscribe", "matched": matched })).into_response());
    }
    let kind = match &message {
        Inbound::Reply { .. } => "reply",
        Inbound::AutoReply { .. } => "auto_reply",
        Inbound::Bounce { .. } => "bounce",
        Inbound::Unsubscribe { .. } => "unsubscribe",
    };
    let event = inbound::our_message(app.store.as_ref(), &message)?
        .and_then(|row| inbound::event_for(&body, &message, &row, app.clock.now()));
    let Some(event) = event else {
        return Ok(Json(json!({ "kind": kind, "matched": false })).into_response());
    };
    let (event_type, record) = (event.event_type.clone(), event.record.to_string());
    let appended = app.appender.append(vec![event]).await?;
    let duplicate = appended.first().is_some_and(|a| a.duplicate);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "kind": kind, "matched": true, "event": event_type,
            "record": record, "duplicate": duplicate,
        })),
    )
        .into_response())
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1><p>{body}</p></body></html>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
