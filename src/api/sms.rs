//! `POST /hooks/sms` (SPEC §3.12): replies, opt-outs and delivery receipts
//! from the SMS provider. Verified by the provider's signature before
//! anything is stored; answered `200` only once what it changed is
//! durable, so the provider retries anything we might have lost.
//!
//! A reply from a number no record was texted at is kept (as a payload of
//! the built-in source `sms`) and counted, to be replayed like any
//! source's; STOP from such a number still suppresses it.

use super::extract::commit_durably;
use super::{ApiError, App};
use crate::config::model::SmsProvider;
use crate::intake::sms::{self, Inbound, Intent};
use crate::state::{Delivery, RejectedPayload, Suppression};
use crate::store::{IntakeWrites, Store};
use crate::telemetry::{self, SourceStep};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The source name texts are counted and kept under.
pub const SOURCE: &str = "sms";

/// What Twilio reads as "nothing to answer".
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// `POST /hooks/sms`.
pub(super) async fn post_hook<S: Store>(
    State(app): State<Arc<App<S>>>,
    RawQuery(query): RawQuery,
    header_map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let workflows = app.workflows.load_full();
    let Some(settings) = &workflows.settings.sms else {
        return Err(ApiError::not_found(
            "texts are not set up here (the workflows have no settings.sms)",
        ));
    };
    telemetry::source(SOURCE, SourceStep::Received);
    let headers = super::kept::headers(&header_map);
    let url = match &query {
        Some(q) => format!("{}/hooks/sms?{q}", workflows.settings.public_base()),
        None => format!("{}/hooks/sms", workflows.settings.public_base()),
    };
    let now = app.clock.now();
    if let Err(refusal) = sms::verify(settings, &url, &body, &headers, now) {
        telemetry::source(SOURCE, SourceStep::Rejected(refusal.label()));
        tracing::info!(reason = %refusal, "Refused a delivery to /hooks/sms.");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            format!(
                "{refusal}; the URL checked was {url} (settings.public_url must be the address the provider calls)"
            ),
        ));
    }
    telemetry::source(SOURCE, SourceStep::Verified);
    let row = super::extract::query_value(query.as_deref(), "row");
    let inbound = sms::read(settings.provider, &body, row.as_deref(), now)
        .map_err(|e| ApiError::bad_request("unreadable", e.0))?;
    let changes = match inbound {
        Inbound::Receipt { row, receipt } => receipt_changes(&app, row, receipt)?,
        Inbound::Message {
            id,
            from,
            body: text,
            ..
        } => message_changes(&app, &id, &from, &text, now, || {
            super::kept::kept_payload(SOURCE, &body, headers, now)
        })?,
    };
    let events = changes.events().len() as u64;
    commit_durably(&app, changes).await?;
    telemetry::source(SOURCE, SourceStep::Events(events));
    Ok(answer(settings.provider))
}

/// Twilio reads TwiML; the generic provider gets JSON.
fn answer(provider: SmsProvider) -> Response {
    match provider {
        SmsProvider::Twilio => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/xml")],
            EMPTY_TWIML,
        )
            .into_response(),
        SmsProvider::Http => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "accepted": true })),
        )
            .into_response(),
    }
}

/// A receipt for one of our rows: kept beside the row, and `sms.failed`
/// when the text did not arrive. A receipt for no row we know is counted
/// and acknowledged (the provider cannot do better with it).
fn receipt_changes<S: Store>(
    app: &App<S>,
    row: Option<String>,
    receipt: crate::state::Receipt,
) -> Result<IntakeWrites, ApiError> {
    let found = match &row {
        Some(id) => app.store.outbox_entry(id)?,
        None => None,
    };
    let Some(found) = found else {
        telemetry::source(SOURCE, SourceStep::Rejected("receipt_for_unknown_text"));
        tracing::info!(row = ?row, status = %receipt.status, "A text receipt names no text of ours.");
        return Ok(IntakeWrites::default());
    };
    let Delivery::Sms { to, .. } = &found.delivery else {
        return Err(ApiError::bad_request(
            "not_a_text",
            format!("outbox row {} is not a text", found.id),
        ));
    };
    let event = sms::receipt_event(&found.id, &found.record, to, &receipt);
    let mut changes = IntakeWrites::default();
    changes.raise(event).receipts([(found.id.clone(), receipt)]);
    Ok(changes)
}

/// A text from a person: a reply on the record last texted at that
/// number, or an opt-out or opt-in of the number itself.
pub(crate) fn message_changes<S: Store>(
    app: &App<S>,
    id: &str,
    from: &str,
    text: &str,
    now: DateTime<Utc>,
    keep: impl FnOnce() -> RejectedPayload,
) -> Result<IntakeWrites, ApiError> {
    let record = match crate::state::phone::e164(from.trim()) {
        Ok(phone) => app.store.texted(phone)?,
        Err(_) => None,
    };
    let handled = match sms::handle_message(id, from, text, record, now) {
        Ok(handled) => handled,
        Err(why) => {
            let mut payload = keep();
            payload.reason = why.0;
            telemetry::source(SOURCE, SourceStep::Rejected("unknown_number"));
            tracing::info!(kept = %payload.id, reason = %payload.reason, "A text was kept: it has no record.");
            let mut changes = IntakeWrites::default();
            changes.keep([payload]);
            return Ok(changes);
        }
    };
    let mut changes = IntakeWrites::default();
    changes.raise(handled.event);
    match handled.intent {
        Intent::OptOut => {
            tracing::info!(phone = %handled.phone, "A number opted out of texts.");
            changes.suppress([Suppression::new(&handled.phone, "texted STOP", now)]);
        }
        Intent::OptIn => {
            tracing::info!(phone = %handled.phone, "A number opted back in to texts.");
            changes.unsuppress([handled.phone]);
        }
        Intent::Reply => {}
    }
    Ok(changes)
}

/// Reads a kept text again: a reply whose number has been texted since
/// becomes its event; one that still has no record stays, and is `422`.
pub(crate) async fn replay<S: Store>(
    app: &App<S>,
    payload: RejectedPayload,
) -> Result<serde_json::Value, ApiError> {
    let workflows = app.workflows.load_full();
    let Some(settings) = &workflows.settings.sms else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "unknown_source",
            "the running workflows have no settings.sms; add it back to replay kept texts",
        ));
    };
    let at = payload.received_at;
    let unreadable =
        |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unmappable", why);
    let Inbound::Message { id, from, body, .. } =
        sms::read(settings.provider, &payload.body, None, at).map_err(|e| unreadable(e.0))?
    else {
        return Err(unreadable("a kept receipt cannot be replayed".to_owned()));
    };
    let kept_id = payload.id.clone();
    let mut changes = message_changes(app, &id, &from, &body, at, || payload)?;
    if let Some(still) = changes.kept().first() {
        let why = format!("the text still has no record: {}", still.reason);
        commit_durably(app, changes).await?;
        return Err(unreadable(why));
    }
    let events = changes.events().len();
    changes.replayed([(SOURCE.to_owned(), kept_id.clone())]);
    commit_durably(app, changes).await?;
    telemetry::source(SOURCE, SourceStep::Events(events as u64));
    Ok(serde_json::json!({ "replayed": kept_id, "events": events }))
}
