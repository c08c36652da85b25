//! How the engine worker is getting on, for `/v1/status`: whether it is
//! retrying a round that failed (a disk error, say) and since when. Events
//! it set aside are durable and read from the store instead.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Mutex;

/// Shared between the worker, which records, and the API, which shows.
#[derive(Debug, Default)]
pub struct EngineHealth {
    failing: Mutex<Option<Failing>>,
}

#[derive(Debug)]
struct Failing {
    since: DateTime<Utc>,
    error: String,
    retry_at: DateTime<Utc>,
}

impl EngineHealth {
    /// A round failed; the worker tries again at `retry_at`.
    pub fn failed(&self, at: DateTime<Utc>, error: &str, retry_at: DateTime<Utc>) {
        metrics::counter!("dealflow_engine_round_failures_total").increment(1);
        if let Ok(mut failing) = self.failing.lock() {
            let since = failing.as_ref().map_or(at, |f| f.since);
            *failing = Some(Failing {
                since,
                error: error.to_owned(),
                retry_at,
            });
        }
    }

    /// A round went through.
    pub fn recovered(&self) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = None;
        }
    }

    /// `{"state": "running"}`, or `"retrying"` with the error, since when and
    /// when the next try is.
    pub fn status(&self) -> Value {
        let Ok(failing) = self.failing.lock() else {
            return Value::Null;
        };
        match failing.as_ref() {
            None => json!({ "state": "running" }),
            Some(f) => json!({
                "state": "retrying",
                "last_error": f.error,
                "failing_since": crate::engine::time(f.since),
                "next_try": crate::engine::time(f.retry_at),
            }),
        }
    }
}
