//! The durable state dealflow keeps: events, records, stage history, tasks,
//! outbox rows, timers, enrollments, runs. Shared by the engine (which
//! computes it), the store (which keeps it) and the API (which shows it).
//!
//! Owns: the durable types and the vocabulary the daemon raises
//! ([`BuiltinEvent`], [`TimerKind`]). Never: depends on any other module of
//! dealflow.

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

pub mod address;
mod builtin;
mod effects;
mod json_text;
pub mod phone;
mod scores;

pub use builtin::BuiltinEvent;
pub use effects::Effects;
pub use json_text::JsonText;
pub use scores::{ModelScore, RuleSlots, Scores};

/// Which record an event or task concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// Record kind (`lead`, `deal`, ...).
    pub kind: String,
    /// The source system's id.
    pub id: String,
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// An event as stored in the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log; events are handled in this order.
    pub seq: u64,
    /// Idempotency key (given by the sender, or `gen-SEQ`).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The record it happened to.
    pub record: RecordKey,
    /// Fields to merge into the record.
    #[serde(default)]
    pub fields: Map<String, Json>,
    /// Event data (`event.NAME`).
    #[serde(default)]
    pub data: Map<String, Json>,
    /// When it happened (sender's word, else when received).
    pub occurred_at: DateTime<Utc>,
    /// How many events led to this one (0 for events from outside).
    #[serde(default)]
    pub depth: u32,
}

/// An event before it has a place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Idempotency key; `None` gets one from the log and is never deduplicated.
    pub id: Option<String>,
    /// Event type.
    pub event_type: String,
    /// The record.
    pub record: RecordKey,
    /// Fields to merge.
    pub fields: Map<String, Json>,
    /// Data.
    pub data: Map<String, Json>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Chain depth.
    pub depth: u32,
}

impl NewEvent {
    /// A `form.submitted` with id `id` on lead `lead`, nothing else: the
    /// event store tests post.
    #[cfg(test)]
    pub(crate) fn form(id: &str, lead: &str) -> Self {
        NewEvent {
            id: Some(id.to_owned()),
            event_type: "form.submitted".into(),
            record: RecordKey {
                kind: "lead".into(),
                id: lead.into(),
            },
            fields: Default::default(),
            data: Default::default(),
            occurred_at: DateTime::UNIX_EPOCH,
            depth: 0,
        }
    }

    /// A built-in event dealflow raises from outside the engine (delivery,
    /// inbound mail, a timer, the API), with no fields: data only.
    pub fn raised(
        event: BuiltinEvent,
        record: RecordKey,
        data: Json,
        at: DateTime<Utc>,
        id: Option<String>,
    ) -> NewEvent {
        NewEvent {
            id,
            event_type: event.name().to_owned(),
            record,
            fields: Map::new(),
            data: match data {
                Json::Object(map) => map,
                _ => Map::new(),
            },
            occurred_at: at,
            depth: 0,
        }
    }
}

/// One page of a listing; `next` is the cursor for the following page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items in key order.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// Walks every page of a listing: `page(after)` fetches one page, `each`
/// takes every item in order. Reports, reload checks and `simulate` read
/// whole tables this way, one page in memory at a time.
pub fn for_each_item<T, E>(
    mut page: impl FnMut(Option<&str>) -> Result<Page<T>, E>,
    mut each: impl FnMut(T),
) -> Result<(), E> {
    let mut after: Option<String> = None;
    loop {
        let p = page(after.as_deref())?;
        p.items.into_iter().for_each(&mut each);
        match p.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Record fields dealflow keeps; workflows and events cannot set them
/// (`owner` is the exception SPEC §7 allows).
pub const KEPT_FIELDS: &[&str] = &[
    "id",
    "kind",
    "pipeline",
    "stage",
    "stage_entered_at",
    "days_in_stage",
    "score",
    "scores",
    "created_at",
    "updated_at",
];

/// A record: a lead, deal or any other kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredRecord")]
pub struct Record {
    /// Kind and id.
    #[serde(flatten)]
    pub key: RecordKey,
    /// User fields.
    pub fields: Map<String, Json>,
    /// Owner's email.
    pub owner: Option<String>,
    /// Pipeline name, once the record is in one.
    pub pipeline: Option<String>,
    /// Current stage.
    pub stage: Option<String>,
    /// When the current stage was entered.
    pub stage_entered_at: Option<DateTime<Utc>>,
    /// Where the record stands in each scoring model.
    #[serde(default)]
    pub scoring: Scores,
    /// The pending `stage.stalled` timer of the current stage visit; deleted
    /// when the record leaves the stage.
    #[serde(default)]
    pub stall_timer: Option<TimerRef>,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A record as the store reads it: the same map as `Record` writes, with
/// the key's two fields at the top. `Record` reads through it because serde
/// reads a `flatten`ed struct by buffering the whole map first, which was a
/// fifth of the engine's time on a scored lead (issue 6's benchmark).
#[derive(Deserialize)]
struct StoredRecord {
    kind: String,
    id: String,
    fields: Map<String, Json>,
    owner: Option<String>,
    pipeline: Option<String>,
    stage: Option<String>,
    stage_entered_at: Option<StoredTime>,
    #[serde(default)]
    scoring: Scores,
    #[serde(default)]
    stall_timer: Option<TimerRef>,
    created_at: StoredTime,
    updated_at: StoredTime,
}

/// A time as a record stores it (RFC 3339, as chrono writes it), read with
/// chrono's RFC 3339 parser, and its relaxed one only if that fails. serde's
/// default is the relaxed one, which is several times slower, and a scored
/// record holds one time per model (issue 6's profile: 10% of the engine).
struct StoredTime(DateTime<Utc>);

impl<'de> Deserialize<'de> for StoredTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rfc3339;
        impl serde::de::Visitor<'_> for Rfc3339 {
            type Value = StoredTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StoredTime, E> {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.to_utc())
                    .or_else(|_| s.parse())
                    .map(StoredTime)
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(Rfc3339)
    }
}

impl From<StoredRecord> for Record {
    fn from(r: StoredRecord) -> Self {
        Record {
            key: RecordKey {
                kind: r.kind,
                id: r.id,
            },
            fields: r.fields,
            owner: r.owner,
            pipeline: r.pipeline,
            stage: r.stage,
            stage_entered_at: r.stage_entered_at.map(|t| t.0),
            scoring: r.scoring,
            stall_timer: r.stall_timer,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

impl Record {
    /// A new record with no fields.
    pub fn new(key: RecordKey, now: DateTime<Utc>) -> Self {
        Record {
            key,
            fields: Map::new(),
            owner: None,
            pipeline: None,
            stage: None,
            stage_entered_at: None,
            scoring: Scores::default(),
            stall_timer: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether a field is present and non-empty (stage requirements).
    pub fn has_value(&self, field: &str) -> bool {
        let value = match field {
            "owner" => return self.owner.as_deref().is_some_and(|o| !o.is_empty()),
            _ => self.fields.get(field),
        };
        match value {
            None | Some(Json::Null) => false,
            Some(Json::String(s)) => !s.trim().is_empty(),
            Some(Json::Array(a)) => !a.is_empty(),
            Some(Json::Object(o)) => !o.is_empty(),
            Some(_) => true,
        }
    }

    /// Whole days in the current stage at `now`.
    pub fn days_in_stage(&self, now: DateTime<Utc>) -> Option<i64> {
        self.stage_entered_at.map(|at| (now - at).num_days())
    }
}

/// One contribution to a score, kept so every score can be explained and
/// recomputed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreEntry {
    /// The record.
    pub record: RecordKey,
    /// Scoring model.
    pub model: CompactString,
    /// The rule (its name, or position and trigger), or `action RULE`.
    pub rule: CompactString,
    /// Points added (negative: removed; an attribute turning false removes its points).
    pub points: f64,
    /// When.
    pub at: DateTime<Utc>,
    /// The event that caused it.
    pub event_id: String,
    /// Log position of that event, with the entry's place among its entries
    /// (orders the ledger).
    pub seq: (u64, u32),
}

/// The contributions one event made to a record's scores, as the engine
/// hands them to the store: what they share is said once, since a scored
/// event makes one per rule it matches in every model.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreNotes {
    /// The record.
    pub record: RecordKey,
    /// The event that caused them.
    pub event_id: String,
    /// That event's log position.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// The contributions, in the order they were made.
    pub entries: Vec<ScoreNote>,
}

/// One contribution in [`ScoreNotes`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreNote {
    /// Scoring model.
    pub model: CompactString,
    /// The rule, as in [`ScoreEntry`].
    pub rule: CompactString,
    /// Points added.
    pub points: f64,
}

/// One stay of a record in a stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageVisit {
    /// Pipeline.
    pub pipeline: String,
    /// Stage.
    pub stage: String,
    /// Entered.
    pub entered_at: DateTime<Utc>,
    /// Left; `None` while still there.
    pub exited_at: Option<DateTime<Utc>>,
    /// Owner when it entered (reports by rep).
    pub owner: Option<String>,
    /// `stage.stalled` notices during this visit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stalls: u32,
    /// Refused moves out of this visit, by unmet requirement (a refusal
    /// with two unmet requirements counts once under each).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refusals: BTreeMap<String, u32>,
    /// Refused moves out of this visit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_moves: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether a task is still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// To do.
    Open,
    /// Done.
    Completed,
}

/// A human step queued for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Stable id, derived from the run that created it.
    pub id: String,
    /// The record it is about.
    pub record: RecordKey,
    /// Title.
    pub title: String,
    /// Notes (a handoff's context note, for example).
    pub notes: Option<String>,
    /// Person; `None` is unassigned.
    pub owner: Option<String>,
    /// Due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Open or completed.
    pub status: TaskStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The rule (or `sequence:NAME`) that created it.
    pub created_by: String,
    /// The sequence step that created it.
    #[serde(default)]
    pub step: Option<String>,
    /// Whether a handoff made it (the owners report times the response).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_handoff: bool,
}

/// What an outbox row asks delivery to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    try_from = "delivery_fields::Fields"
)]
pub enum Delivery {
    /// An email to a record's contact or (notify) to a team member.
    Email {
        /// Recipient.
        to: String,
        /// Copies.
        cc: Vec<String>,
        /// Sender (the owner) when known.
        from: Option<String>,
        /// Subject.
        subject: String,
        /// Body as rendered (Markdown, HTML or text per `format`).
        body: String,
        /// How `body` is written.
        format: BodyFormat,
        /// Who it is for; a prospect's email gets unsubscribe headers and
        /// a footer, and is stopped by opt-outs. Shown as `to_prospect`.
        #[serde(rename = "to_prospect", serialize_with = "audience_as_bool::serialize")]
        audience: Audience,
        /// The outbox id of the message this one follows up in the same
        /// thread (In-Reply-To / References).
        #[serde(default)]
        thread: Option<String>,
        /// The zone the send was timed in (the recipient's, else the
        /// send window's).
        #[serde(default)]
        zone: Option<String>,
    },
    /// An HTTP call.
    Webhook {
        /// URL.
        url: String,
        /// Method.
        method: String,
        /// Headers.
        headers: Vec<(String, String)>,
        /// JSON body, as the text sent.
        body: JsonText,
        /// Signing secret (never shown by the API).
        #[serde(default)]
        secret: Option<String>,
    },
    /// A text message to a record's phone (SPEC §3.12).
    Sms {
        /// Recipient, E.164 (`+15551234567`).
        to: String,
        /// Plain text as rendered.
        body: String,
        /// The zone the send and its quiet hours are timed in.
        #[serde(default)]
        zone: Option<String>,
    },
}

/// Reads a [`Delivery`] in one pass. serde reads an internally tagged enum
/// by first copying the whole map into a buffer of its own (it cannot know
/// the variant before the tag), so a webhook's body was built twice on
/// every read of a row: 1.7% of the daemon's CPU under W1. The variants'
/// fields share one namespace (only `body` differs in type: text for
/// emails and texts, any JSON for webhooks), so they are read into one
/// struct and checked against the tag after.
mod delivery_fields {
    use super::json_text::StoredBody;
    use super::{BodyFormat, Delivery, Json};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Fields {
        kind: String,
        to: Option<String>,
        cc: Option<Vec<String>>,
        from: Option<String>,
        subject: Option<String>,
        body: Option<StoredBody>,
        format: Option<BodyFormat>,
        #[serde(
            default,
            deserialize_with = "super::audience_as_bool::deserialize_optional"
        )]
        to_prospect: Option<super::Audience>,
        thread: Option<String>,
        zone: Option<String>,
        url: Option<String>,
        method: Option<String>,
        headers: Option<Vec<(String, String)>>,
        secret: Option<String>,
    }

    impl TryFrom<Fields> for Delivery {
        type Error = String;

        fn try_from(f: Fields) -> Result<Self, String> {
            let kind = f.kind;
            let missing = |field: &str| format!("missing field `{field}` for kind {kind}");
            let text = |body: Option<StoredBody>| match body {
                Some(StoredBody::Value(Json::String(text))) => Ok(text),
                Some(_) => Err(format!("the body for kind {kind} must be text")),
                None => Err(missing("body")),
            };
            Ok(match kind.as_str() {
                "email" => Delivery::Email {
                    to: f.to.ok_or_else(|| missing("to"))?,
                    cc: f.cc.ok_or_else(|| missing("cc"))?,
                    from: f.from,
                    subject: f.subject.ok_or_else(|| missing("subject"))?,
                    body: text(f.body)?,
                    format: f.format.ok_or_else(|| missing("format"))?,
                    audience: f.to_prospect.ok_or_else(|| missing("to_prospect"))?,
                    thread: f.thread,
                    zone: f.zone,
                },
                "webhook" => Delivery::Webhook {
                    url: f.url.ok_or_else(|| missing("url"))?,
                    method: f.method.ok_or_else(|| missing("method"))?,
                    headers: f.headers.ok_or_else(|| missing("headers"))?,
                    body: f.body.ok_or_else(|| missing("body"))?.into_json_text(),
                    secret: f.secret,
                },
                "sms" => Delivery::Sms {
                    to: f.to.ok_or_else(|| missing("to"))?,
                    body: text(f.body)?,
                    zone: f.zone,
                },
                other => {
                    return Err(format!(
                        "unknown variant `{other}`, expected one of `email`, `webhook`, `sms`"
                    ));
                }
            })
        }
    }
}

/// How an email body is written: from a template's extension, or
/// Markdown for inline text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `.md`: Markdown, sent as HTML with a plain-text part.
    Markdown,
    /// `.html`: HTML, auto-escaped.
    Html,
    /// `.txt`: plain text.
    Text,
}

/// Who an email is for: limits, stop checks and unsubscribe links treat
/// touches to prospects and notices to the team differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A record's contact (sequences, `email:`).
    Prospect,
    /// A person of the team (`notify:`).
    Team,
}

/// Stored and shown as `to_prospect: true|false`, as before it was typed.
mod audience_as_bool {
    use super::Audience;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(audience: &Audience, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*audience == Audience::Prospect)
    }

    /// Read back; `None` when the field is missing.
    pub fn deserialize_optional<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Audience>, D::Error> {
        Ok(
            Option::<bool>::deserialize(d)?.map(|prospect| match prospect {
                true => Audience::Prospect,
                false => Audience::Team,
            }),
        )
    }
}

/// Where an outbox row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting to be sent.
    Pending,
    /// Handed to a worker (flushed before the send starts).
    Sending,
    /// Accepted by the receiver.
    Sent,
    /// Failed; will retry.
    Failed,
    /// Given up.
    Dead,
    /// Stopped before it was handed over (unsubscribed, bounced, the
    /// enrollment exited).
    Cancelled,
    /// Interrupted by a crash while being handed over, and
    /// `on_uncertain: hold` says a person decides.
    Held,
}

impl OutboxStatus {
    /// Whether delivery still has work to do on it.
    pub fn is_waiting(self) -> bool {
        matches!(self, OutboxStatus::Pending | OutboxStatus::Failed)
    }
}

/// A side effect waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Stable identity, derived from the run and the action.
    pub id: String,
    /// The record.
    pub record: RecordKey,
    /// What to deliver.
    pub delivery: Delivery,
    /// State.
    pub status: OutboxStatus,
    /// Tries so far.
    pub attempts: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The rule (or `sequence:NAME`) that produced it.
    pub created_by: String,
    /// The sequence step that produced it.
    #[serde(default)]
    pub step: Option<String>,
    /// Not before this time (retry backoff, rate-limit deferral).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// What went wrong last, or why it waits.
    #[serde(default)]
    pub last_error: Option<String>,
    /// How many times a sending limit deferred it.
    #[serde(default)]
    pub deferrals: u32,
    /// When the receiver accepted it.
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    /// The rule chain it belongs to: one more than the event whose handling
    /// queued it. The events its delivery raises (`email.sent`, ...) carry
    /// it on, so a rule on `email.sent` that sends email ends at the chain
    /// limit instead of mailing forever.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// The provider's own id of a text (Twilio's `MessageSid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The last delivery receipt of a text (`delivered`, `failed`, ...).
    /// Kept in a table of its own and joined on read: the hook that
    /// receives it and the delivery worker never write the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// A provider's delivery receipt of a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The provider's status: `sent`, `delivered`, `failed`, `undelivered`, ...
    pub status: String,
    /// The provider's error code, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

impl OutboxEntry {
    /// A new row waiting for its first try.
    pub fn pending(
        id: String,
        record: RecordKey,
        delivery: Delivery,
        created_at: DateTime<Utc>,
        created_by: String,
    ) -> Self {
        OutboxEntry {
            id,
            record,
            delivery,
            status: OutboxStatus::Pending,
            attempts: 0,
            created_at,
            created_by,
            step: None,
            next_attempt_at: None,
            last_error: None,
            deferrals: 0,
            sent_at: None,
            depth: 0,
            provider_id: None,
            receipt: None,
        }
    }

    /// When delivery may next try it.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.next_attempt_at.unwrap_or(self.created_at)
    }
}

/// A sequence enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The record.
    pub record: RecordKey,
    /// Sequence name.
    pub sequence: String,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Whether it runs, or how it ended.
    pub status: EnrollmentStatus,
    /// Id of the next step to run.
    pub next_step: Option<String>,
    /// Why it ended.
    pub exit_reason: Option<String>,
    /// Who or what ended it early (exited enrollments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_cause: Option<ExitCause>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The timer it waits on (a wait, or a closed send window).
    #[serde(default)]
    pub timer: Option<TimerRef>,
    /// When the next step is due, while waiting.
    #[serde(default)]
    pub next_at: Option<DateTime<Utc>>,
    /// Outbox ids of the emails sent, by step id (for `thread:`).
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
    /// The last step that ran (an email, task or webhook): an exit is
    /// credited to it in the sequences report.
    #[serde(default)]
    pub last_step: Option<String>,
}

impl Enrollment {
    /// A record's new enrollment in `sequence` at `at`, before its first step.
    pub fn new(record: RecordKey, sequence: &str, at: DateTime<Utc>) -> Self {
        Enrollment {
            record,
            sequence: sequence.to_owned(),
            enrolled_at: at,
            status: EnrollmentStatus::Active,
            next_step: None,
            exit_reason: None,
            exit_cause: None,
            ended_at: None,
            timer: None,
            next_at: None,
            messages: Default::default(),
            last_step: None,
        }
    }

    /// Whether it still runs.
    pub fn is_active(&self) -> bool {
        self.status == EnrollmentStatus::Active
    }
}

/// Who or what ended an enrollment early: the prospect's or a person's
/// doing stops the emails it had queued; the sequence's own ending does
/// not (its `exit:` step comes after its own sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// An event of the sequence's `exit_on` (a reply, an unsubscribe, ...).
    Event,
    /// A rule or a person (`unenroll`).
    Unenrolled,
    /// An `exit:` step of the sequence.
    Step,
    /// A step failed.
    Failed,
    /// A reload changed or removed the definition.
    Definition,
}

impl ExitCause {
    /// Whether emails the enrollment had queued must not go out.
    pub fn stops_queued_sends(self) -> bool {
        matches!(self, ExitCause::Event | ExitCause::Unenrolled)
    }
}

/// Whether an enrollment runs, or how it ended (stored and shown as
/// `active`, `exited`, `completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentStatus {
    /// Its steps still run.
    Active,
    /// Stopped early (a reply, an unsubscribe, an `exit:` step, ...).
    Exited,
    /// Ran every step.
    Completed,
}

/// Where a timer is kept, so the state that set it can delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRef {
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// Its id (also the id of the event it raises).
    pub id: String,
}

/// A durable timer (stalls, waits, overdue tasks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    /// Unique id.
    pub id: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// The event it raises.
    pub event: NewEvent,
}

impl Timer {
    /// Where it is kept.
    pub fn reference(&self) -> TimerRef {
        TimerRef {
            due_at: self.due_at,
            id: self.id.clone(),
        }
    }
}

/// What set a timer, written as the first part of its id so the event it
/// fires (whose id is the timer's) says where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// A record sits in a stage (`stage.stalled`).
    Stall,
    /// A task is past due (`task.overdue`).
    Overdue,
    /// A sequence enrollment's next step is due.
    Step,
}

impl TimerKind {
    const ALL: [TimerKind; 3] = [TimerKind::Stall, TimerKind::Overdue, TimerKind::Step];

    const fn prefix(self) -> &'static str {
        match self {
            TimerKind::Stall => "stall/",
            TimerKind::Overdue => "overdue/",
            TimerKind::Step => "step/",
        }
    }

    /// A timer id of this kind; `rest` makes it unique.
    pub fn id(self, rest: impl std::fmt::Display) -> String {
        format!("{}{rest}", self.prefix())
    }

    /// The kind of a timer (or fired event) id, and the rest of the id.
    pub fn of(id: &str) -> Option<(TimerKind, &str)> {
        Self::ALL
            .into_iter()
            .find_map(|kind| id.strip_prefix(kind.prefix()).map(|rest| (kind, rest)))
    }
}

/// How an action ended (stored and shown as its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did its work.
    Ok,
    /// It failed: the run stops and `action.failed` is raised.
    Failed,
    /// A gate said no (a stage move, a handoff missing a field).
    Refused,
    /// Nothing to do (already so, suppressed, ...).
    Skipped,
    /// Delivery gave up on its outbox row.
    Dead,
}

impl Outcome {
    /// The name runs, metrics and reports use.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Skipped => "skipped",
            Outcome::Dead => "dead",
        }
    }
}

/// How one action of a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// Action kind (`task`, `set`, ...).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One rule firing: which rule, on which event, under which version, what
/// its condition saw and what each action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Unique id (event sequence and rule position).
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Record.
    pub record: RecordKey,
    /// Workflows version it ran under.
    pub version: String,
    /// The condition as written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Whether it matched.
    pub matched: bool,
    /// Values the condition read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub saw: BTreeMap<String, Json>,
    /// Each action's outcome.
    pub actions: Vec<ActionOutcome>,
    /// When.
    pub at: DateTime<Utc>,
    /// Set when the run failed as a whole (condition error, chain too deep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An event the engine could not handle (its record cannot be decoded,
/// say), set aside with the error so the events after it go on. It stays
/// in the log; this row says which one and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAsideEvent {
    /// Its place in the log.
    pub seq: u64,
    /// Its id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The record it is about.
    pub record: RecordKey,
    /// What went wrong.
    pub error: String,
    /// When it was set aside.
    pub at: DateTime<Utc>,
}

/// A timer whose stored row does not decode (a damaged disk, a bug), set
/// aside with its bytes so the timers due after it still fire. It never
/// fires; this row says which one and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAsideTimer {
    /// Its id, as its key gives it.
    pub id: String,
    /// When it was due, as its key gives it.
    pub due_at: DateTime<Utc>,
    /// What went wrong.
    pub error: String,
    /// When it was set aside.
    pub at: DateTime<Utc>,
    /// The row as it was stored, for whoever looks into it.
    #[serde(default)]
    pub stored: Vec<u8>,
}

/// A verified payload a source could not map to events, kept with why,
/// to be replayed after the workflows are fixed (SPEC §3.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedPayload {
    /// Unique within its source; sorts by arrival.
    pub id: String,
    /// The source it was posted to.
    pub source: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Why it could not be mapped, the last time it was tried.
    pub reason: String,
    /// The body, exactly as received.
    #[serde(with = "serde_bytes_as_text")]
    pub body: Vec<u8>,
    /// Its headers (lower-case names), without the ones carrying secrets.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The sender's delivery id, when its scheme signs one.
    pub delivery_id: Option<String>,
}

/// A forecasting pipeline's weighted forecast as it stood on one day
/// (SPEC §3.4), kept so a later report can say what was forecast then
/// against what closed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastSnapshot {
    /// Pipeline name.
    pub pipeline: String,
    /// The day (UTC) it stands for.
    pub day: chrono::NaiveDate,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// Open deals then.
    pub open_deals: u64,
    /// Their value.
    pub open_value: f64,
    /// Their weighted value: the forecast.
    pub weighted_value: f64,
    /// The forecast per owner ("" is no owner).
    #[serde(default)]
    pub weighted_by_owner: BTreeMap<String, f64>,
}

/// Where dealflow is in an IMAP mailbox: stored in the same commit as the
/// events its messages raised, so each message is handled once across
/// crashes (SPEC §3.11).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPosition {
    /// The mailbox's name.
    pub name: String,
    /// The folder's UIDVALIDITY when `last_uid` was read; another value
    /// means the UIDs were renumbered and the folder is read again.
    pub uid_validity: u32,
    /// The last UID handled.
    pub last_uid: u32,
    /// When the last message was handled.
    pub last_handled_at: Option<DateTime<Utc>>,
}

/// A body stored as text when it is UTF-8 (nearly always: JSON), else as
/// bytes; read back either way.
mod serde_bytes_as_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => Stored::Text(text.to_owned()).serialize(s),
            Err(_) => Stored::Bytes(body.to_vec()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Text(text) => text.into_bytes(),
            Stored::Bytes(bytes) => bytes,
        })
    }
}

/// An address no workflow emails any more, why and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// The address, as [`address::normalized`] spells it.
    pub address: String,
    /// `unsubscribed (link)`, `bounced (5.1.1)`, ...
    pub reason: String,
    /// When it was added (`None` for suppressions stored before dealflow
    /// recorded it).
    pub at: Option<DateTime<Utc>>,
}

impl Suppression {
    /// A suppression of `raw` (any spelling) for `reason`, at `at`.
    pub fn new(raw: &str, reason: impl Into<String>, at: DateTime<Utc>) -> Self {
        Suppression {
            address: address::normalized(raw),
            reason: reason.into(),
            at: Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_relaxed_times_still_read() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let key = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let mut record = Record::new(key, t("2026-03-02T14:00:00.123456789Z"));
        record.stage_entered_at = Some(t("2026-03-03T08:30:00+02:00"));
        let as_of = t("2026-03-04T00:00:00.000000007Z");
        let standing = ModelScore::with_parts(2.5, Some(as_of), [("visit", 2.5)]);
        record.scoring.insert("fit", standing);
        let bytes = rmp_serde::to_vec_named(&record).unwrap();
        assert_eq!(rmp_serde::from_slice::<Record>(&bytes).unwrap(), record);

        let mut json = serde_json::to_value(&record).unwrap();
        json["created_at"] = "2026-03-02 14:00:00.123456789Z".into();
        assert_eq!(
            serde_json::from_value::<Record>(json.clone()).unwrap(),
            record
        );
        json["updated_at"] = "yesterday".into();
        let err = serde_json::from_value::<Record>(json).unwrap_err();
        assert!(
            err.to_string()
                .contains("input contains invalid characters"),
            "{err}"
        );
    }

    #[test]
    fn every_delivery_reads_back_as_written_and_bad_ones_say_why() {
        let deliveries = [
            Delivery::Email {
                to: "ana@example.com".into(),
                cc: vec!["boss@example.com".into()],
                from: None,
                subject: "Hi".into(),
                body: "**Hello**".into(),
                format: BodyFormat::Markdown,
                audience: Audience::Team,
                thread: Some("r1".into()),
                zone: None,
            },
            Delivery::Webhook {
                url: "https://example.com/hook".into(),
                method: "POST".into(),
                headers: vec![("x-a".into(), "1".into())],
                body: serde_json::json!({"n": u64::MAX, "f": -1.5, "list": [null, "é"]}).into(),
                secret: Some("whsec_abc".into()),
            },
            Delivery::Webhook {
                url: "https://example.com/hook".into(),
                method: "PUT".into(),
                headers: vec![],
                body: serde_json::json!("just text").into(),
                secret: None,
            },
            Delivery::Sms {
                to: "+15551234567".into(),
                body: "See you".into(),
                zone: Some("Europe/Paris".into()),
            },
        ];
        for delivery in deliveries {
            let bytes = rmp_serde::to_vec_named(&delivery).unwrap();
            assert_eq!(rmp_serde::from_slice::<Delivery>(&bytes).unwrap(), delivery);
            let json = serde_json::to_value(&delivery).unwrap();
            assert_eq!(serde_json::from_value::<Delivery>(json).unwrap(), delivery);
        }

        let refused = |json: Json| {
            serde_json::from_value::<Delivery>(json)
                .unwrap_err()
                .to_string()
        };
        let no_url =
            serde_json::json!({"kind": "webhook", "method": "POST", "headers": [], "body": {}});
        assert!(refused(no_url).contains("missing field `url` for kind webhook"));
        let sms = serde_json::json!({"kind": "sms", "to": "+1555", "body": {"a": 1}});
        assert!(refused(sms).contains("the body for kind sms must be text"));
        let fax = serde_json::json!({"kind": "fax", "to": "+1555"});
        assert!(refused(fax).contains("unknown variant `fax`"));
    }
}
