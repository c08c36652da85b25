//! What delivery tells an operator beyond each row: failures on our own
//! side (a bad SMTP login, a refused sender), which stop every email until
//! someone fixes the settings, counted and shown in `/v1/status`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Mutex;

/// Shared between the delivery worker, which records, and the API, which shows.
#[derive(Debug, Default)]
pub struct DeliveryHealth {
    state: Mutex<SenderFailures>,
}

#[derive(Debug, Default)]
struct SenderFailures {
    /// Since the daemon started.
    count: u64,
    /// The latest, with its time (already free of secrets).
    last: Option<(DateTime<Utc>, String)>,
}

impl DeliveryHealth {
    /// A send the mail server refused for a reason of the sender's.
    pub fn sender_failure(&self, at: DateTime<Utc>, reason: &str) {
        metrics::counter!("dealflow_delivery_sender_failures_total").increment(1);
        if let Ok(mut state) = self.state.lock() {
            state.count += 1;
            state.last = Some((at, reason.to_owned()));
        }
    }

    /// `{"sender_failures": N, "last_sender_failure": {"at", "error"} | null}`.
    pub fn status(&self) -> Value {
        let Ok(state) = self.state.lock() else {
            return Value::Null;
        };
        let last = state
            .last
            .as_ref()
            .map(|(at, error)| json!({ "at": crate::engine::time(*at), "error": error }));
        json!({ "sender_failures": state.count, "last_sender_failure": last })
    }
}
