//! `webhook:` queues an HTTP call, by default with the event and record.

use super::{ActionError, ActionResult, Done, Origin, queue_delivery, render, render_json};
use crate::config::workflows::WebhookAction;
use crate::engine::{Work, context};
use crate::state::{Delivery, JsonText};
use serde_json::Value as Json;

/// The body without `body:`, written out in one pass (`json!` would copy
/// the event and the record into a tree of its own first).
#[derive(serde::Serialize)]
struct DefaultBody<'a> {
    event: Json,
    record: Json,
    rule: &'a str,
}

pub(in crate::engine) fn webhook(
    work: &mut Work,
    w: &WebhookAction,
    origin: &Origin,
) -> ActionResult {
    let url = render(work, &w.url, &[])?;
    let headers = w
        .headers
        .iter()
        .map(|(k, v)| render(work, v, &[]).map(|v| (k.clone(), v)))
        .collect::<Result<Vec<(String, String)>, ActionError>>()?;
    let body = match &w.body {
        Some(b) => JsonText::from(&render_json(work, b)?),
        None => JsonText::of(&DefaultBody {
            event: context::event_json(work.event),
            record: context::record_json(&work.record, work.workflows, work.now),
            rule: &origin.rule,
        }),
    };
    queue_delivery(
        work,
        origin,
        Delivery::Webhook {
            url: url.clone(),
            method: w.method.clone(),
            headers,
            body,
            secret: w.secret.clone(),
        },
    );
    Ok(Done::Ok(Some(format!("webhook to {url} queued"))))
}
