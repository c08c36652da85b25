//! The timeline of a simulation: every event, send and task, in the order
//! they happened, read back from the simulation's store.

use crate::config::Workflows;
use crate::delivery::message;
use crate::delivery::unsubscribe::UnsubscribeKey;
use crate::engine::internal;
use crate::state::{Delivery, OutboxEntry, RecordKey};
use crate::store::{EventTable, OutboxTable, Page, StoreError, TaskFilter, TaskTable};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value as Json, json};

/// Events that repeat what other entries say; left out of the printed
/// timeline (tests can still expect them).
const QUIET: &[&str] = &["record.updated", "score.changed", "task.created"];

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When.
    pub at: DateTime<Utc>,
    /// Zone it is shown in: the recipient's for sends, else UTC.
    pub zone: Tz,
    /// `email`, `notify`, `webhook`, `task` or an event type.
    pub kind: String,
    /// The record.
    pub record: RecordKey,
    /// What tests match against.
    pub fields: Map<String, Json>,
    /// Log position of the event it is or came from: sends and tasks sort
    /// right after the event whose handling made them, before the events
    /// that handling raised.
    order: (u64, u8),
}

/// Everything that happened, in order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Entries by time, then by log order.
    pub entries: Vec<Entry>,
}

impl Timeline {
    /// Reads the timeline out of a simulation's store; a send that delivery
    /// would refuse is marked with `fails` and the reason.
    pub fn from_store<S>(store: &S, workflows: &Workflows) -> Result<Timeline, StoreError>
    where
        S: EventTable + OutboxTable + TaskTable,
    {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let events = store.events_after(after, 1024)?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            for e in events {
                if e.event_type.starts_with(internal::PREFIX) {
                    continue;
                }
                let mut fields = e.data.clone();
                fields.insert("record".to_owned(), json!(e.record.to_string()));
                entries.push(Entry {
                    at: e.occurred_at,
                    zone: Tz::UTC,
                    kind: e.event_type,
                    record: e.record,
                    fields,
                    order: (e.seq, 0),
                });
            }
        }
        for row in all_pages(|after| store.outbox(after, 1024))? {
            let (kind, zone, mut fields) = delivery_fields(&row.delivery);
            if let Some(why) = would_fail(&row, workflows) {
                fields.insert("fails".to_owned(), json!(why));
            }
            let mut shown = Json::Object(fields);
            workflows.secrets.redact_json(&mut shown);
            let Json::Object(mut fields) = shown else {
                continue;
            };
            fields.insert("rule".to_owned(), json!(row.created_by));
            fields.insert("step".to_owned(), json!(row.step));
            fields.insert("record".to_owned(), json!(row.record.to_string()));
            entries.push(Entry {
                at: row.created_at,
                zone: zone.unwrap_or(Tz::UTC),
                kind: kind.to_owned(),
                record: row.record,
                fields,
                order: (seq_of(&row.id), 1),
            });
        }
        let filter = TaskFilter::default();
        for task in all_pages(|after| store.tasks(&filter, after, 1024))? {
            let fields = json!({
                "title": task.title, "owner": task.owner, "step": task.step,
                "rule": task.created_by, "record": task.record.to_string(),
                "due_at": task.due_at.map(crate::engine::time),
            });
            entries.push(Entry {
                at: task.created_at,
                zone: Tz::UTC,
                kind: "task".to_owned(),
                record: task.record,
                fields: fields.as_object().cloned().unwrap_or_default(),
                order: (seq_of(&task.id), 1),
            });
        }
        entries.sort_by_key(|e| (e.at, e.order));
        Ok(Timeline { entries })
    }

    /// The entries worth printing.
    pub fn printable(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| !QUIET.contains(&e.kind.as_str()))
    }
}

fn all_pages<T>(
    page: impl FnMut(Option<&str>) -> Result<Page<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    crate::store::for_each_item(page, |item| out.push(item))?;
    Ok(out)
}

/// Outbox and task ids start with the log position of the event whose
/// handling made them.
fn seq_of(id: &str) -> u64 {
    id.get(..16)
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Why delivery would refuse a row before sending anything: the message
/// cannot be built (no sender, a bad address) or the webhook guard refuses
/// its host. Failures only a real server can give are not foreseen.
fn would_fail(row: &OutboxEntry, workflows: &Workflows) -> Option<String> {
    match &row.delivery {
        Delivery::Email { .. } => {
            // Any key: signing links cannot fail, and nothing is sent.
            let key = UnsubscribeKey::from_bytes(&[0; 32]);
            message::build(row, workflows, &key).err()
        }
        Delivery::Webhook { url, .. } => crate::config::webhook_hosts::refused_without_dns(
            url,
            &workflows.settings.webhook_allow_hosts,
        ),
        Delivery::Sms { .. } => None,
    }
}

fn delivery_fields(delivery: &Delivery) -> (&'static str, Option<Tz>, Map<String, Json>) {
    let (kind, zone, value) = match delivery {
        Delivery::Email {
            to,
            cc,
            subject,
            audience,
            zone,
            thread,
            ..
        } => (
            match audience {
                crate::state::Audience::Prospect => "email",
                crate::state::Audience::Team => "notify",
            },
            zone.as_deref().and_then(|z| z.parse::<Tz>().ok()),
            json!({ "to": to, "cc": cc, "subject": subject, "thread": thread }),
        ),
        Delivery::Webhook { url, method, .. } => {
            ("webhook", None, json!({ "url": url, "method": method }))
        }
        Delivery::Sms { to, body, zone } => (
            "sms",
            zone.as_deref().and_then(|z| z.parse::<Tz>().ok()),
            json!({ "to": to, "body": body }),
        ),
    };
    (kind, zone, value.as_object().cloned().unwrap_or_default())
}

impl Entry {
    /// `YYYY-MM-DD HH:MM UTC  kind  detail`: one time column, in UTC, so
    /// the lines read in order; a send timed in the recipient's zone adds
    /// that local time at the end (`(09:03 CST for the recipient)`).
    pub fn line(&self) -> String {
        let when = self.at.format("%Y-%m-%d %H:%M UTC");
        let local = if self.zone == Tz::UTC {
            String::new()
        } else {
            let there = self.at.with_timezone(&self.zone).format("%a %H:%M %Z");
            format!("  ({there} for the recipient)")
        };
        let fails = match self.text("fails").as_str() {
            "" => String::new(),
            why => format!("  FAILS: {why}"),
        };
        format!("{when}  {:<18} {}{local}{fails}", self.kind, self.detail())
    }

    /// The entry as one JSON object (`--format json`).
    pub fn json(&self) -> Json {
        let mut map = self.fields.clone();
        map.insert("at".to_owned(), json!(crate::engine::time(self.at)));
        map.insert("zone".to_owned(), json!(self.zone.name()));
        map.insert("kind".to_owned(), json!(self.kind));
        Json::Object(map)
    }

    fn text(&self, name: &str) -> String {
        match self.fields.get(name) {
            Some(Json::String(s)) => s.clone(),
            None | Some(Json::Null) => String::new(),
            Some(other) => other.to_string(),
        }
    }

    fn detail(&self) -> String {
        let origin = match self.text("step").as_str() {
            "" => self.text("rule"),
            step => step.to_owned(),
        };
        match self.kind.as_str() {
            "email" | "notify" => format!(
                "{} {origin} → {} \"{}\"",
                self.record,
                self.text("to"),
                self.text("subject")
            ),
            "webhook" => format!(
                "{} {origin} → {} {}",
                self.record,
                self.text("method"),
                self.text("url")
            ),
            "task" => {
                let owner = match self.text("owner").as_str() {
                    "" => "unassigned".to_owned(),
                    o => format!("for {o}"),
                };
                format!("{} \"{}\" {owner}", self.record, self.text("title"))
            }
            _ => {
                let data: Vec<String> = self
                    .fields
                    .iter()
                    .filter(|(k, v)| k.as_str() != "record" && !v.is_null())
                    .map(|(k, _)| format!("{k}={}", self.text(k)))
                    .collect();
                format!("{} {}", self.record, data.join(" "))
                    .trim_end()
                    .to_owned()
            }
        }
    }
}
