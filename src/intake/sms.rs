//! Texts coming back (SPEC §3.12): what the provider posts to `/hooks/sms`,
//! verified and read into what it means. A built-in source: like a
//! workflow's source it is verified before anything is stored, its events
//! carry the provider's ids (a retried delivery is one event), and a text
//! no record can be found for is kept to be replayed, never dropped.
//!
//! Twilio posts a form: an inbound text has `MessageSid`, `From`, `To`
//! and `Body`; a status callback has `MessageStatus` (and `ErrorCode` when
//! it failed). The generic `http` provider posts JSON, signed like a
//! Standard Webhook with the provider's token: `{"type": "message", "id",
//! "from", "to", "body"}` or `{"type": "status", "id", "status",
//! "error_code"}`.

use super::verify::{Delivery, Headers, Refusal};
use crate::config::model::SmsProvider;
use crate::config::workflows::{SmsSettings, Verification};
use crate::state::{BuiltinEvent, NewEvent, Receipt, RecordKey, phone};
use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use std::time::Duration;

/// Words that stop all texts to the sender's number (the carriers' and
/// Twilio's list), matched as the whole text, in any case.
const OPT_OUT_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
/// Words that lift it.
const OPT_IN_WORDS: &[&str] = &["START", "UNSTOP"];

/// How old a signed JSON delivery may be.
const TOLERANCE: Duration = Duration::from_secs(300);

/// What the provider posted.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A text from a person.
    Message {
        /// The provider's id of the text.
        id: String,
        /// The sender's number, as the provider gives it.
        from: String,
        /// Our number.
        to: String,
        /// What they wrote.
        body: String,
    },
    /// A delivery receipt of one of our texts.
    Receipt {
        /// Our outbox row, from the callback address.
        row: Option<String>,
        /// The receipt.
        receipt: Receipt,
    },
}

/// What a text from a person asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// A reply.
    Reply,
    /// STOP and its synonyms.
    OptOut,
    /// START or UNSTOP.
    OptIn,
}

impl Intent {
    /// The intent of a text's body.
    pub fn of(body: &str) -> Intent {
        let word = body.trim().trim_end_matches(['.', '!']).to_uppercase();
        if OPT_OUT_WORDS.contains(&word.as_str()) {
            Intent::OptOut
        } else if OPT_IN_WORDS.contains(&word.as_str()) {
            Intent::OptIn
        } else {
            Intent::Reply
        }
    }
}

/// Why a verified delivery cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Checks the provider's signature. `url` is the address the provider
/// called, as it called it (`settings.public_url` + path + query): Twilio
/// signs it together with the form's parameters.
pub fn verify(
    settings: &SmsSettings,
    url: &str,
    body: &[u8],
    headers: &Headers,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    match settings.provider {
        SmsProvider::Twilio => {
            let header = "x-twilio-signature";
            let signature = headers
                .get(header)
                .ok_or_else(|| Refusal::Missing(header.to_owned()))?;
            let params = form(body);
            if crate::signature::twilio_verify(&settings.token.0, url, &params, signature) {
                Ok(())
            } else {
                Err(Refusal::Mismatch("X-Twilio-Signature"))
            }
        }
        SmsProvider::Http => {
            let scheme = Verification::Standard {
                secret: settings.token.clone(),
                tolerance: TOLERANCE,
            };
            let delivery = Delivery {
                body,
                headers,
                query_token: None,
            };
            super::verify::verify(&scheme, &delivery, now).map(|_| ())
        }
    }
}

/// The form's parameters, in the order sent.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Reads a verified delivery; `row` is the `?row=` of the callback address.
pub fn read(
    provider: SmsProvider,
    body: &[u8],
    row: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Inbound, Unreadable> {
    let fields: Vec<(String, String)> = match provider {
        SmsProvider::Twilio => form(body),
        SmsProvider::Http => json_fields(body)?,
    };
    let get = |names: &[&str]| {
        fields
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let missing = |what: &str| Unreadable(format!("the delivery has no {what}"));
    if let Some(status) = get(&["MessageStatus", "status"]) {
        return Ok(Inbound::Receipt {
            row: row.map(str::to_owned),
            receipt: Receipt {
                status: status.trim().to_lowercase(),
                error_code: get(&["ErrorCode", "error_code"]).filter(|c| !c.is_empty()),
                at: now,
            },
        });
    }
    Ok(Inbound::Message {
        id: get(&["MessageSid", "id"]).ok_or_else(|| missing("message id (MessageSid)"))?,
        from: get(&["From", "from"]).ok_or_else(|| missing("sender (From)"))?,
        to: get(&["To", "to"]).unwrap_or_default(),
        body: get(&["Body", "body"]).unwrap_or_default(),
    })
}

/// The generic provider's JSON as name/value pairs (strings and numbers).
fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, Unreadable> {
    let value: Json = serde_json::from_slice(body)
        .map_err(|e| Unreadable(format!("the body is not JSON: {e}")))?;
    let Json::Object(map) = value else {
        return Err(Unreadable("the body is not a JSON object".to_owned()));
    };
    let kind = map.get("type").and_then(Json::as_str).unwrap_or("message");
    let fields: Vec<(String, String)> = map
        .iter()
        .filter(|(k, _)| kind != "message" || k.as_str() != "status")
        .filter_map(|(k, v)| match v {
            Json::String(s) => Some((k.clone(), s.clone())),
            Json::Number(n) => Some((k.clone(), n.to_string())),
            _ => None,
        })
        .collect();
    if kind == "status" && !fields.iter().any(|(k, _)| k == "status") {
        return Err(Unreadable("a status delivery has no status".to_owned()));
    }
    Ok(fields)
}

/// What a text from a person changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The event it raises, when its sender is a record we texted.
    pub event: Option<NewEvent>,
    /// What happens to the sender's number on the suppression list.
    pub intent: Intent,
    /// The sender's number in E.164.
    pub phone: String,
}

/// The meaning of a text from `from`, sent by `record` if we know them.
/// A reply from a number no record was texted at cannot be an event
/// (events belong to records): `Err` says so, and the caller keeps it.
pub fn handle_message(
    id: &str,
    from: &str,
    body: &str,
    record: Option<RecordKey>,
    now: DateTime<Utc>,
) -> Result<Handled, Unreadable> {
    let phone = phone::e164(from.trim()).map_err(Unreadable)?.to_owned();
    let intent = Intent::of(body);
    let event = match (intent, record) {
        (Intent::Reply, None) => {
            return Err(Unreadable(format!(
                "no record was texted at {phone}, so the reply has no record to belong to"
            )));
        }
        (Intent::Reply, Some(record)) => Some(NewEvent::raised(
            BuiltinEvent::SmsReplied,
            record,
            json!({ "phone": phone, "body": body, "provider_id": id }),
            now,
            Some(format!("{}/{id}", BuiltinEvent::SmsReplied)),
        )),
        (Intent::OptOut, Some(record)) => Some(NewEvent::raised(
            BuiltinEvent::SmsOptedOut,
            record,
            json!({ "phone": phone, "word": body.trim(), "provider_id": id }),
            now,
            Some(format!("{}/{id}", BuiltinEvent::SmsOptedOut)),
        )),
        (Intent::OptOut | Intent::OptIn, _) => None,
    };
    Ok(Handled {
        event,
        intent,
        phone,
    })
}

/// The event a receipt raises on its row's record: `sms.failed` when the
/// text did not arrive.
pub fn receipt_event(
    row: &str,
    record: &RecordKey,
    phone: &str,
    receipt: &Receipt,
) -> Option<NewEvent> {
    let failed = matches!(receipt.status.as_str(), "failed" | "undelivered");
    failed.then(|| {
        NewEvent::raised(
            BuiltinEvent::SmsFailed,
            record.clone(),
            json!({
                "phone": phone, "status": receipt.status,
                "error_code": receipt.error_code, "outbox_id": row,
            }),
            receipt.at,
            Some(format!("{}/{row}", BuiltinEvent::SmsFailed)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-02T15:00:00Z".parse().unwrap()
    }

    fn lead() -> RecordKey {
        RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        }
    }

    #[test]
    fn stop_words_are_whole_texts_in_any_case() {
        for word in [
            "STOP",
            "stop",
            " Stop.",
            "stopall",
            "Unsubscribe",
            "cancel",
            "END",
            "quit",
        ] {
            assert_eq!(Intent::of(word), Intent::OptOut, "{word}");
        }
        for word in ["START", "unstop"] {
            assert_eq!(Intent::of(word), Intent::OptIn, "{word}");
        }
        for text in ["please stop texting", "Stop by tomorrow?", "yes", ""] {
            assert_eq!(Intent::of(text), Intent::Reply, "{text}");
        }
    }

    #[test]
    fn twilio_forms_read_as_texts_or_receipts() {
        let text = b"MessageSid=SM1&From=%2B15551234567&To=%2B15550000000&Body=Sounds+good";
        assert_eq!(
            read(SmsProvider::Twilio, text, None, now()).unwrap(),
            Inbound::Message {
                id: "SM1".into(),
                from: "+15551234567".into(),
                to: "+15550000000".into(),
                body: "Sounds good".into()
            }
        );
        let status = b"MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003";
        let Inbound::Receipt { row, receipt } =
            read(SmsProvider::Twilio, status, Some("r1"), now()).unwrap()
        else {
            panic!("a receipt");
        };
        assert_eq!(row.as_deref(), Some("r1"));
        assert_eq!(
            (receipt.status.as_str(), receipt.error_code.as_deref()),
            ("undelivered", Some("30003"))
        );
        let nothing = read(SmsProvider::Twilio, b"Body=hi", None, now()).unwrap_err();
        assert!(nothing.0.contains("MessageSid"), "{nothing}");
    }

    #[test]
    fn json_deliveries_read_like_forms() {
        let text = br#"{"type":"message","id":"m1","from":"+15551234567","to":"+15550000000","body":"Hi"}"#;
        assert!(matches!(
            read(SmsProvider::Http, text, None, now()).unwrap(),
            Inbound::Message { ref id, .. } if id == "m1"
        ));
        let status = br#"{"type":"status","id":"m1","status":"delivered"}"#;
        assert!(matches!(
            read(SmsProvider::Http, status, Some("r1"), now()).unwrap(),
            Inbound::Receipt { ref receipt, .. } if receipt.status == "delivered"
        ));
        assert!(read(SmsProvider::Http, b"[1]", None, now()).is_err());
        assert!(read(SmsProvider::Http, b"{not json", None, now()).is_err());
    }

    #[test]
    fn a_reply_needs_a_record_and_stop_does_not() {
        let reply =
            handle_message("SM1", "+15551234567", "Yes, call me", Some(lead()), now()).unwrap();
        let event = reply.event.unwrap();
        assert_eq!(event.event_type, "sms.replied");
        assert_eq!(event.id.as_deref(), Some("sms.replied/SM1"));
        let unknown = handle_message("SM2", "+15551234567", "who is this", None, now());
        assert!(unknown.unwrap_err().0.contains("no record was texted"));
        let stop = handle_message("SM3", "+15551234567", "STOP", None, now()).unwrap();
        assert_eq!((stop.intent, stop.event), (Intent::OptOut, None));
        let bad = handle_message("SM4", "5551234567", "STOP", None, now()).unwrap_err();
        assert!(bad.0.contains("E.164"), "{bad}");
    }

    #[test]
    fn only_failed_receipts_raise_an_event() {
        let receipt = |status: &str| Receipt {
            status: status.into(),
            error_code: None,
            at: now(),
        };
        assert!(receipt_event("r1", &lead(), "+15551234567", &receipt("delivered")).is_none());
        let failed = receipt_event("r1", &lead(), "+15551234567", &receipt("failed")).unwrap();
        assert_eq!(failed.id.as_deref(), Some("sms.failed/r1"));
    }
}
