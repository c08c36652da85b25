//! What each mailbox is doing, for `/v1/status` and metrics: connected and
//! waiting (`idle` or `polling`), `connecting`, or `error` with the last
//! error (never the password: it is not in any message the IMAP code makes,
//! and the workflows' secrets are masked besides).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A mailbox's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting or logging in.
    Connecting,
    /// Reading new messages.
    Reading,
    /// Waiting with IDLE.
    Idle,
    /// Waiting for the next poll (the server has no IDLE).
    Polling,
    /// The last attempt failed; retrying after a pause.
    Error,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Reading => "reading",
            Phase::Idle => "idle",
            Phase::Polling => "polling",
            Phase::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    url: String,
    phase: Phase,
    last_error: Option<(DateTime<Utc>, String)>,
    last_read_at: Option<DateTime<Utc>>,
    last_handled_at: Option<DateTime<Utc>>,
    handled: u64,
    skipped: u64,
    last_skipped: Option<String>,
}

/// Shared between the mailbox watchers, which record, and the API, which shows.
#[derive(Debug, Default)]
pub struct MailboxHealth {
    states: Mutex<BTreeMap<String, State>>,
}

impl MailboxHealth {
    fn with(&self, name: &str, url: &str, change: impl FnOnce(&mut State)) {
        if let Ok(mut states) = self.states.lock() {
            let state = states.entry(name.to_owned()).or_insert_with(|| State {
                url: url.to_owned(),
                phase: Phase::Connecting,
                last_error: None,
                last_read_at: None,
                last_handled_at: None,
                handled: 0,
                skipped: 0,
                last_skipped: None,
            });
            state.url = url.to_owned();
            change(state);
        }
    }

    /// The mailbox entered `phase`.
    pub fn phase(&self, name: &str, url: &str, phase: Phase) {
        self.with(name, url, |s| s.phase = phase);
    }

    /// An attempt failed with `error` (already free of secrets).
    pub fn failed(&self, name: &str, url: &str, at: DateTime<Utc>, error: &str) {
        metrics::counter!("dealflow_mailbox_errors_total", "mailbox" => name.to_owned())
            .increment(1);
        self.with(name, url, |s| {
            s.phase = Phase::Error;
            s.last_error = Some((at, error.to_owned()));
        });
    }

    /// Messages were read at `at`: `handled` raised events, `skipped` could not be read.
    pub fn read(
        &self,
        name: &str,
        url: &str,
        at: DateTime<Utc>,
        handled: u64,
        skipped: Option<(u64, String)>,
    ) {
        self.with(name, url, |s| {
            s.last_read_at = Some(at);
            s.handled += handled;
            if handled > 0 {
                s.last_handled_at = Some(at);
            }
            if let Some((count, why)) = skipped {
                s.skipped += count;
                s.last_skipped = Some(why);
            }
        });
    }

    /// Forgets mailboxes no longer configured.
    pub fn keep_only(&self, names: &[String]) {
        if let Ok(mut states) = self.states.lock() {
            states.retain(|name, _| names.contains(name));
        }
    }

    /// One object per mailbox, for `/v1/status`; `lag_seconds` is how long
    /// since the mailbox was last read up to date.
    pub fn status(&self, now: DateTime<Utc>) -> Value {
        let Ok(states) = self.states.lock() else {
            return Value::Null;
        };
        let time = |t: &Option<DateTime<Utc>>| t.map(crate::engine::time);
        let list: Vec<Value> = states
            .iter()
            .map(|(name, s)| {
                json!({
                    "name": name,
                    "url": s.url,
                    "state": s.phase.name(),
                    "last_error": s.last_error.as_ref().map(|(at, e)| json!({ "at": crate::engine::time(*at), "error": e })),
                    "last_read_at": time(&s.last_read_at),
                    "last_handled_at": time(&s.last_handled_at),
                    "lag_seconds": s.last_read_at.map(|t| (now - t).num_seconds().max(0)),
                    "handled": s.handled,
                    "skipped": s.skipped,
                    "last_skipped": s.last_skipped,
                })
            })
            .collect();
        Value::Array(list)
    }
}
