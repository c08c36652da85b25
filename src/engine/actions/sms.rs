//! `sms:` queues a text to the record's phone (SPEC §3.12): only to an
//! E.164 number, only with the record's `sms_consent`, never to a number
//! that opted out.

use super::{ActionResult, Done, Origin, queue_delivery, render};
use crate::config::workflows::SmsAction;
use crate::engine::Work;
use crate::state::{Delivery, phone};
use serde_json::Value as Json;

pub(in crate::engine) fn sms(work: &mut Work, t: &SmsAction, origin: &Origin) -> ActionResult {
    let to = match &t.to {
        Some(to) => render(work, to, &[])?,
        None => match work.record.fields.get("phone") {
            Some(Json::String(phone)) => phone.clone(),
            Some(_) => return Err("the record's phone field is not text".into()),
            None => return Err("the record has no phone field".into()),
        },
    };
    let to = phone::e164(to.trim())?.to_owned();
    if !consented(work.record.fields.get("sms_consent")) {
        return Err(
            format!("the record has no sms_consent: true, so {to} may not be texted").into(),
        );
    }
    if work.state.is_suppressed(&to)? {
        return Ok(Done::Skipped(format!("{to} opted out of texts")));
    }
    let body = render(work, &t.body, &[])?;
    if let Some(why) = phone::body_problem(&body) {
        return Err(why.into());
    }
    queue_delivery(
        work,
        origin,
        Delivery::Sms {
            to: to.clone(),
            body,
            zone: origin.zone.clone(),
        },
    );
    Ok(Done::Ok(Some(format!("text to {to} queued"))))
}

/// Consent is `true`, or the text `"true"` a form or spreadsheet import
/// gives; anything else, missing included, is no consent.
fn consented(value: Option<&Json>) -> bool {
    match value {
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}
