//! Texts through a provider's HTTP API (SPEC §3.12): Twilio's Messages API
//! (form-encoded, basic auth), or a generic JSON POST with a bearer token.
//!
//! Twilio's Messages API takes no idempotency key, so a text interrupted
//! by a crash follows `on_uncertain` like an email; the generic provider
//! gets the row id as `Idempotency-Key`. Delivery receipts come back to
//! `/hooks/sms?row=ID`, which names the row without any lookup.

use super::retry::Failure;
use super::webhook::classify;
use crate::causes::chain_text;
use crate::config::model::SmsProvider;
use crate::config::workflows::SmsSettings;
use crate::state::{Delivery, OutboxEntry};
use serde_json::{Value as Json, json};
use std::time::Duration;

/// Twilio's error code for a recipient who texted STOP to this sender.
const TWILIO_UNSUBSCRIBED: i64 = 21610;

/// A provider client for one settings version.
pub struct SmsClient {
    client: reqwest::Client,
    settings: SmsSettings,
    /// Where receipts go: the public base; `None` asks for none.
    callback_base: Option<String>,
}

impl SmsClient {
    /// A client for `settings`; receipts are asked for at `public_url`
    /// when one is set (a provider cannot reach the listen address).
    pub fn new(settings: &SmsSettings, public_url: Option<&str>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("sms client: {e}"))?;
        Ok(SmsClient {
            client,
            settings: settings.clone(),
            callback_base: public_url.map(|u| u.trim_end_matches('/').to_owned()),
        })
    }

    /// Hands a text row to the provider; answers the provider's message id.
    pub async fn send(&self, row: &OutboxEntry) -> Result<Option<String>, Failure> {
        let Delivery::Sms { to, body, .. } = &row.delivery else {
            return Err(Failure::Permanent("not a text".to_owned()));
        };
        let callback = self
            .callback_base
            .as_ref()
            .map(|base| status_callback(base, &row.id));
        let s = &self.settings;
        let request = match s.provider {
            SmsProvider::Twilio => {
                let mut form = vec![("To", to.as_str()), ("From", &s.from), ("Body", body)];
                if let Some(callback) = &callback {
                    form.push(("StatusCallback", callback));
                }
                self.client
                    .post(format!(
                        "{}/2010-04-01/Accounts/{}/Messages.json",
                        s.url, s.account
                    ))
                    .basic_auth(&s.account, Some(&s.token.0))
                    .form(&form)
            }
            SmsProvider::Http => self
                .client
                .post(&s.url)
                .bearer_auth(&s.token.0)
                .header("idempotency-key", &row.id)
                .json(&json!({
                    "id": row.id, "to": to, "from": s.from, "body": body,
                    "status_callback": callback,
                })),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::transient(format!("SMS provider: {}", chain_text(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer: Json = response.json().await.unwrap_or(Json::Null);
        if let Err(failure) = classify(status, &headers) {
            return Err(explained(failure, status, &answer));
        }
        let id = ["sid", "id"]
            .iter()
            .find_map(|k| answer.get(k).and_then(Json::as_str))
            .map(str::to_owned);
        Ok(id)
    }
}

/// The receipt address of a row (row ids are digits, letters and `-`).
fn status_callback(base: &str, row: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("row", row)
        .finish();
    format!("{base}/hooks/sms?{query}")
}

/// The provider's own words added to a failure. Twilio's "unsubscribed
/// recipient" is a refusal of the recipient (an opt-out), not a failure
/// of the text; a refused login (401, 403) is ours, not the text's: it is
/// retried like a passing failure and counted in `/v1/status`, so a wrong
/// token does not kill every text sent while it lasts.
fn explained(failure: Failure, status: reqwest::StatusCode, answer: &Json) -> Failure {
    let code = answer.get("code").and_then(Json::as_i64);
    let message = answer.get("message").and_then(Json::as_str);
    let detail = match (code, message) {
        (Some(code), Some(message)) => format!(" (provider error {code}: {message})"),
        (None, Some(message)) => format!(" ({message})"),
        _ => String::new(),
    };
    let login_refused = matches!(status.as_u16(), 401 | 403);
    match failure {
        Failure::Permanent(reason) if code == Some(TWILIO_UNSUBSCRIBED) => {
            Failure::Refused(format!("{reason}{detail}"))
        }
        Failure::Permanent(reason) if login_refused => Failure::Sender(format!(
            "{reason}{detail}: the SMS provider refused settings.sms's account or token"
        )),
        Failure::Permanent(reason) => Failure::Permanent(format!("{reason}{detail}")),
        Failure::Transient {
            reason,
            retry_after,
        } => Failure::Transient {
            reason: format!("{reason}{detail}"),
            retry_after,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_address_names_its_row() {
        assert_eq!(
            status_callback("https://flows.example", "0000000000000007-step1"),
            "https://flows.example/hooks/sms?row=0000000000000007-step1"
        );
    }

    #[test]
    fn twilio_unsubscribed_is_a_refusal_and_other_errors_keep_their_words() {
        let bad = reqwest::StatusCode::BAD_REQUEST;
        let refused = explained(
            Failure::Permanent("HTTP 400".into()),
            bad,
            &json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient"}),
        );
        assert!(
            matches!(refused, Failure::Refused(ref r) if r.contains("21610")),
            "{refused:?}"
        );
        let invalid = explained(
            Failure::Permanent("HTTP 400".into()),
            bad,
            &json!({"code": 21211, "message": "The 'To' number is not a valid phone number."}),
        );
        assert!(
            matches!(invalid, Failure::Permanent(ref r) if r.contains("not a valid phone")),
            "{invalid:?}"
        );
        let login = explained(
            Failure::Permanent("HTTP 401".into()),
            reqwest::StatusCode::UNAUTHORIZED,
            &json!({"code": 20003, "message": "Authenticate"}),
        );
        assert!(
            matches!(login, Failure::Sender(ref r) if r.contains("token")),
            "{login:?}"
        );
    }
}
