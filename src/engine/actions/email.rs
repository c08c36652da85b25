//! `email:` queues an email to the record's contact (suppressed addresses
//! are skipped), from the owner, with an unsubscribe link.

use super::{ActionError, ActionResult, Done, Origin, queue_delivery, render};
use crate::config::workflows::{EmailAction, EmailContent};
use crate::engine::Work;
use crate::state::{Audience, BodyFormat, Delivery};
use serde_json::Value as Json;

/// The unsubscribe link of an outbox row; the Delivery work signs it.
fn unsubscribe_url(work: &Work, outbox_id: &str) -> String {
    unsubscribe_placeholder(work.workflows, outbox_id)
}

/// The unsubscribe link the engine renders into an email. The engine holds
/// no secrets, so delivery replaces it with the signed link (see
/// `delivery::unsubscribe`) right before the email is handed over.
pub fn unsubscribe_placeholder(workflows: &crate::config::Workflows, outbox_id: &str) -> String {
    format!("{}/u/{outbox_id}", workflows.settings.public_base())
}

pub(in crate::engine) fn email(work: &mut Work, e: &EmailAction, origin: &Origin) -> ActionResult {
    let to = match &e.to {
        Some(t) => render(work, t, &[]),
        None => work
            .record
            .fields
            .get("email")
            .and_then(Json::as_str)
            .map(String::from)
            .ok_or_else(|| "the record has no email field".into()),
    }?;
    if work.state.is_suppressed(&to)? {
        return Ok(Done::Skipped(format!("{to} is unsubscribed or suppressed")));
    }
    let extra = [(
        "unsubscribe_url",
        Json::String(unsubscribe_url(work, &origin.id)),
    )];
    let message = message(work, &e.content, &extra)?;
    let cc =
        e.cc.iter()
            .map(|c| render(work, c, &[]))
            .collect::<Result<Vec<String>, ActionError>>()?;
    let from = work
        .record
        .owner
        .clone()
        .filter(|o| work.workflows.team.people.contains_key(o));
    queue_delivery(
        work,
        origin,
        Delivery::Email {
            to: to.clone(),
            cc,
            from,
            subject: message.0,
            body: message.1,
            format: message.2,
            audience: Audience::Prospect,
            thread: origin.thread.clone(),
            zone: origin.zone.clone(),
        },
    );
    Ok(Done::Ok(Some(format!("email to {to} queued"))))
}

/// Subject, body and format of a message from a template or inline text.
pub(in crate::engine) fn message(
    work: &mut Work,
    content: &EmailContent,
    extra: &[(&str, Json)],
) -> Result<(String, String, BodyFormat), ActionError> {
    match content {
        EmailContent::Inline { subject, body } => Ok((
            render(work, subject, extra)?,
            render(work, body, extra)?,
            BodyFormat::Markdown,
        )),
        EmailContent::Template(name) => {
            let template = work
                .workflows
                .templates
                .get(name)
                .ok_or_else(|| format!("template {name} no longer exists"))?;
            let subject = template
                .subject
                .as_ref()
                .map(|s| render(work, s, extra))
                .transpose()?
                .unwrap_or_default();
            let body = render(work, &template.body, extra)?;
            Ok((subject, body, template.format))
        }
    }
}
