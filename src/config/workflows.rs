//! The compiled, immutable workflow set that the engine runs.
//!
//! Built only by [`super::compile`]; every name in it has been resolved and
//! every expression and template compiled, so running it needs no checks
//! beyond the run-time errors SPEC §3.1 allows (missing values, type errors).

use super::environment::Secrets;
use super::expr::{Condition, Expressions, TextTemplate, ValueExpr};
use super::model::{
    CatchUp, MatchMode, OnStepRemoved, OnUncertain, Outcome, SignatureEncoding, Strategy,
};
use super::values::{HoursRange, RateLimit};
use crate::state::BodyFormat;
use crate::state::RuleSlots;
use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use rustc_hash::FxHashMap;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A whole compiled workflow folder.
#[derive(Debug)]
pub struct Workflows {
    /// Content hash of every file read; recorded by every run.
    pub version: String,
    /// Record kinds the workflows name; events for other kinds are refused.
    pub kinds: std::collections::BTreeSet<String>,
    /// Files it was compiled from, relative to the folder.
    pub files: Vec<PathBuf>,
    /// `settings:` with defaults applied.
    pub settings: Settings,
    /// Send windows by name.
    pub calendars: BTreeMap<String, Arc<Calendar>>,
    /// People and teams.
    pub team: Team,
    /// Pipelines by the record kind they are for (one per kind).
    pub pipelines: BTreeMap<String, Pipeline>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Sequences by name.
    pub sequences: BTreeMap<String, Sequence>,
    /// Scoring models in file order (the first of a kind is `record.score`).
    pub scoring: Vec<ScoringModel>,
    /// Email templates by base name.
    pub templates: BTreeMap<String, EmailTemplate>,
    /// Webhooks from other tools, by name.
    pub sources: BTreeMap<String, Source>,
    /// Workflow tests.
    pub tests: Vec<WorkflowTest>,
    /// Values from the environment, masked in every message.
    pub secrets: Secrets,
    /// Event type → indexes into `rules` of the rules it triggers.
    pub(crate) trigger_index: HashMap<String, Vec<usize>>,
    /// Rules with `on: "*"`.
    pub(crate) wildcard_rules: Vec<usize>,
    /// The compiled expressions and templates.
    pub expressions: Expressions,
}

impl Workflows {
    /// The rules an event of `event_type` triggers, in file order.
    /// Each comes with its position, which names its runs.
    pub fn rules_for(&self, event_type: &str) -> impl Iterator<Item = (usize, &Rule)> {
        let mut idx: Vec<usize> = self
            .trigger_index
            .get(event_type)
            .into_iter()
            .flatten()
            .chain(&self.wildcard_rules)
            .copied()
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .filter_map(|i| self.rules.get(i).map(|r| (i, r)))
    }

    /// Rules that run on a schedule.
    pub fn scheduled_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|r| matches!(r.trigger, RuleTrigger::Schedule(_)))
    }

    /// The pipeline of a record kind.
    pub fn pipeline_for(&self, kind: &str) -> Option<&Pipeline> {
        self.pipelines.get(kind)
    }
}

/// `settings:` with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Base of unsubscribe links.
    pub public_url: Option<String>,
    /// Zone of schedules without their own.
    pub timezone: Tz,
    /// Mail transport URL; `None` means the maildir under the data directory.
    pub email_transport: Option<String>,
    /// Sender when the record has no owner.
    pub email_from: Option<String>,
    /// Footer of prospect emails.
    pub postal_address: Option<String>,
    /// Limits per sending address, recipient domain and contact.
    pub limits: Limits,
    /// What to do with a send interrupted by a crash.
    pub on_uncertain: OnUncertain,
    /// Webhook hosts allowed to resolve to private addresses.
    pub webhook_allow_hosts: Vec<String>,
    /// Time limit of one webhook call.
    pub webhook_timeout: Duration,
    /// Retry policy of deliveries.
    pub retry: RetryPolicy,
    /// How long run history is kept.
    pub keep_runs: Duration,
    /// How long handled events are kept (their ids deduplicate as long).
    pub keep_events: Duration,
    /// IMAP mailboxes read for replies, bounces and auto-replies.
    pub mailboxes: Vec<Mailbox>,
    /// The text-message provider, when texts are sent.
    pub sms: Option<SmsSettings>,
}

/// `settings.sms` (SPEC §3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSettings {
    /// Who carries the texts.
    pub provider: crate::config::model::SmsProvider,
    /// Base URL of the provider's API, without a trailing `/`.
    pub url: String,
    /// Account (Twilio's Account SID).
    pub account: String,
    /// API token; Twilio also signs its webhooks with it.
    pub token: SigningSecret,
    /// Sending number, E.164.
    pub from: String,
    /// Hours of the recipient's day when nothing is texted.
    pub quiet_hours: Option<QuietHours>,
}

/// A span of the day, possibly across midnight (`21:00-08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute.
    pub start: chrono::NaiveTime,
    /// First minute texts may go again.
    pub end: chrono::NaiveTime,
}

/// An IMAP mailbox dealflow watches (SPEC §3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Unique name.
    pub name: String,
    /// The server's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub security: MailSecurity,
    /// Login name.
    pub user: String,
    /// Password (never shown).
    pub password: SigningSecret,
    /// The folder read, e.g. `INBOX`.
    pub folder: String,
    /// Which messages count as replies.
    pub matching: MatchMode,
    /// What is done with a handled message.
    pub after: AfterHandled,
    /// How often to look when IDLE is not offered, and as a safety net.
    pub poll: Duration,
}

impl Mailbox {
    /// The mailbox's address as logs and `/v1/status` may show it: no password.
    pub fn shown(&self) -> String {
        let scheme = match self.security {
            MailSecurity::Tls => "imaps",
            MailSecurity::StartTls | MailSecurity::Plain => "imap",
        };
        let tls = if self.security == MailSecurity::StartTls {
            "?tls=required"
        } else {
            ""
        };
        format!(
            "{scheme}://{}@{}:{}/{}{tls}",
            self.user, self.host, self.port, self.folder
        )
    }
}

/// How an IMAP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailSecurity {
    /// TLS from the first byte (`imaps://`, port 993).
    Tls,
    /// Plain, then STARTTLS before login (`imap://...?tls=required`).
    StartTls,
    /// No TLS (`imap://`): loopback only.
    Plain,
}

/// What is done with a message of a mailbox once it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterHandled {
    /// Nothing: it stays as it was.
    Leave,
    /// It is flagged `\Seen`.
    MarkSeen,
    /// It is moved to this folder.
    Move(String),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: None,
            timezone: Tz::UTC,
            email_transport: None,
            email_from: None,
            postal_address: None,
            limits: Limits::default(),
            on_uncertain: OnUncertain::Resend,
            webhook_allow_hosts: Vec::new(),
            webhook_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            keep_runs: Duration::from_secs(90 * 86_400),
            keep_events: Duration::from_secs(90 * 86_400),
            mailboxes: Vec::new(),
            sms: None,
        }
    }
}

impl Settings {
    /// Where the daemon is reached from outside (unsubscribe links), without
    /// a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url
            .as_deref()
            .unwrap_or(DEFAULT_PUBLIC_URL)
            .trim_end_matches('/')
    }

    /// Uses `url` (the daemon's listen address) when `public_url` is not set.
    pub fn default_public_url(&mut self, url: &str) {
        self.public_url.get_or_insert_with(|| url.to_owned());
    }
}

/// Base of unsubscribe links when neither `public_url` nor a listen address
/// says better (simulate and test, which send nothing).
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// Sending limits; none unless set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Per sending address.
    pub per_mailbox: Option<RateLimit>,
    /// Per recipient domain.
    pub per_domain: Option<RateLimit>,
    /// Per prospect across all workflows.
    pub per_contact: Option<RateLimit>,
}

/// Exponential backoff of failed deliveries (SPEC §7 "Retries").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub first: Duration,
    /// Longest delay between tries.
    pub max_delay: Duration,
    /// Tries before a delivery is dead.
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(2),
            max_delay: Duration::from_secs(3_600),
            attempts: 12,
        }
    }
}

/// A send window.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// Zone used when the recipient's zone is unknown.
    pub timezone: Tz,
    /// Open days.
    pub days: Vec<Weekday>,
    /// Open hours; `None` is all day.
    pub hours: Option<HoursRange>,
    /// Closed dates.
    pub holidays: Vec<NaiveDate>,
}

/// The team: people by email and named groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Team {
    /// Everyone, by email.
    pub people: BTreeMap<String, Person>,
    /// Groups, by name, members in the order written.
    pub teams: BTreeMap<String, Vec<String>>,
}

/// A person of the team.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Person {
    /// Address and identity.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// The person's zone.
    #[serde(serialize_with = "serialize_optional_tz")]
    pub timezone: Option<Tz>,
    /// The manager's email.
    pub manager: Option<String>,
}

fn serialize_optional_tz<S: serde::Serializer>(tz: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
    match tz {
        Some(tz) => s.serialize_some(tz.name()),
        None => s.serialize_none(),
    }
}

/// A pipeline: a state machine over stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// The record kind it is for.
    pub kind: String,
    /// Whether backward moves are allowed.
    pub allow_backward: bool,
    /// Stages in order.
    pub stages: Vec<Stage>,
    /// The record field holding a deal's value, when the pipeline forecasts.
    pub value: Option<String>,
}

impl Pipeline {
    /// Position of a stage by name.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

/// One stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Unique within the pipeline.
    pub name: String,
    /// Entry requirements.
    pub require: Vec<StageRequirement>,
    /// Exit requirements.
    pub exit_require: Vec<StageRequirement>,
    /// Time in stage before `stage.stalled`.
    pub stall_after: Option<Duration>,
    /// Repeat interval of `stage.stalled`.
    pub stall_repeat: Option<Duration>,
    /// Set on closing stages.
    pub outcome: Option<Outcome>,
    /// The chance a deal here is won (1 for won, 0 for lost, 0 when a
    /// forecasting pipeline's stage does not say).
    pub probability: f64,
}

/// A requirement of entering or leaving a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum StageRequirement {
    /// The field must be present and non-empty.
    Field(String),
    /// The condition must hold; the message explains a failure.
    Check {
        /// The condition.
        condition: Condition,
        /// Shown when it fails.
        message: String,
    },
}

/// A rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// The record kind it is for, if given.
    pub kind: Option<String>,
    /// What starts it.
    pub trigger: RuleTrigger,
    /// Its condition.
    pub condition: Option<Condition>,
    /// Its actions.
    pub actions: Vec<Action>,
}

/// What starts a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleTrigger {
    /// These event types (`*` is in `wildcard_rules`).
    Events(Vec<String>),
    /// A schedule.
    Schedule(Box<Schedule>),
}

/// A cron schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The crontab line as written.
    pub cron_line: String,
    /// Parsed.
    pub cron: croner::Cron,
    /// Zone it is read in.
    pub timezone: Tz,
    /// Missed slots.
    pub catch_up: CatchUp,
    /// Run per record of this kind matching the condition.
    pub for_each: Option<(String, Option<Condition>)>,
}

/// One action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Email to the record's contact.
    Email(EmailAction),
    /// Internal email to a person of the team.
    Notify(NotifyAction),
    /// HTTP call.
    Webhook(WebhookAction),
    /// A task.
    Task(TaskAction),
    /// Field updates; values are templates or literals.
    Set(Vec<(String, FieldValue)>),
    /// Gated move to a stage.
    Move(String),
    /// Owner assignment.
    Assign(Assignment),
    /// Handoff to a team or person.
    Handoff(Handoff),
    /// Enroll in a sequence.
    Enroll(String),
    /// Leave a sequence, or all (`None`).
    Unenroll(Option<String>),
    /// Adjust a score.
    Score {
        /// Model name.
        model: String,
        /// Points.
        points: f64,
    },
    /// Raise a custom event.
    Emit {
        /// Its type.
        event_type: String,
        /// Its data; string leaves are templates.
        data: Option<JsonTemplate>,
    },
    /// A text to the record's phone.
    Sms(SmsAction),
}

/// `sms:`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsAction {
    /// Recipient; `None` is the record's `phone` field.
    pub to: Option<TextTemplate>,
    /// The text.
    pub body: TextTemplate,
}

/// A field value of `set:`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A text rendered at run time.
    Template(TextTemplate),
    /// A number, boolean, null or structure taken as written.
    Literal(Json),
}

/// A JSON value whose string leaves are templates (webhook bodies, emit data).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate {
    /// The value as written.
    pub value: Json,
    /// Compiled templates of its string leaves, by JSON pointer.
    pub strings: BTreeMap<String, TextTemplate>,
}

impl JsonTemplate {
    /// The value with its string leaves rendered in `scope`.
    pub fn render(
        &self,
        expressions: &Expressions,
        scope: &minijinja::Value,
    ) -> Result<Json, super::expr::EvalError> {
        let mut value = self.value.clone();
        for (pointer, text) in &self.strings {
            let rendered = expressions.render(text, scope)?;
            if let Some(slot) = value.pointer_mut(pointer) {
                *slot = Json::String(rendered);
            }
        }
        Ok(value)
    }
}

/// Where an email's content comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum EmailContent {
    /// A file under `templates/`.
    Template(String),
    /// Subject and Markdown body written inline.
    Inline {
        /// Subject.
        subject: TextTemplate,
        /// Body (Markdown).
        body: TextTemplate,
    },
}

/// `email:`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailAction {
    /// Content.
    pub content: EmailContent,
    /// Recipient; `None` is the record's `email` field.
    pub to: Option<TextTemplate>,
    /// Copies.
    pub cc: Vec<TextTemplate>,
    /// Step id whose thread to continue (sequences only).
    pub thread: Option<String>,
}

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// The record owner.
    Owner,
    /// The record owner's manager.
    Manager,
    /// A team member.
    Person(String),
}

/// `notify:`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyAction {
    /// Recipient.
    pub to: NotifyTarget,
    /// Subject; from the template's front matter when absent.
    pub subject: Option<TextTemplate>,
    /// Template name.
    pub template: Option<String>,
    /// Inline body.
    pub body: Option<TextTemplate>,
}

/// `webhook:`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAction {
    /// URL.
    pub url: TextTemplate,
    /// HTTP method.
    pub method: String,
    /// Extra headers.
    pub headers: Vec<(String, TextTemplate)>,
    /// Body; `None` sends `{event, record, rule}`.
    pub body: Option<JsonTemplate>,
    /// Signing secret.
    pub secret: Option<String>,
}

/// `task:`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAction {
    /// Title.
    pub title: TextTemplate,
    /// Owner; `None` is the record owner.
    pub owner: Option<TextTemplate>,
    /// Due after this long.
    pub due: Option<Duration>,
    /// Notes.
    pub notes: Option<TextTemplate>,
}

/// `assign:`.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// Pick from a team.
    Team {
        /// Team name.
        team: String,
        /// How.
        strategy: Strategy,
    },
    /// This person.
    Owner(String),
}

/// `handoff:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    /// Receiver.
    pub to: Assignment,
    /// Fields that must be present.
    pub require: Vec<String>,
    /// Context note.
    pub note: Option<TextTemplate>,
    /// Receiver's task title.
    pub task_title: Option<TextTemplate>,
}

/// A sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Unique name.
    pub name: String,
    /// Record kind.
    pub kind: Option<String>,
    /// Events that end an enrollment.
    pub exit_on: Vec<String>,
    /// `None` is never; else the time after which re-enrolling is allowed.
    pub reenroll: Option<Duration>,
    /// Send window.
    pub send_window: Option<Arc<Calendar>>,
    /// Recipient's zone.
    pub recipient_timezone: Option<TextTemplate>,
    /// Reload policy for removed steps; `None` refuses such reloads.
    pub on_step_removed: Option<OnStepRemoved>,
    /// Steps.
    pub steps: Vec<Step>,
}

/// A sequence step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Id (absent on `wait` and `exit`).
    pub id: Option<String>,
    /// Former id.
    pub renamed_from: Option<String>,
    /// What it does.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Send an email.
    Email(EmailAction),
    /// Queue a task.
    Task(TaskAction),
    /// Call a webhook.
    Webhook(WebhookAction),
    /// Send a text.
    Sms(SmsAction),
    /// Wait.
    Wait(Duration),
    /// Leave with a reason.
    Exit(String),
    /// Branch.
    Branch {
        /// Condition.
        condition: Condition,
        /// Steps when true.
        then: Vec<Step>,
        /// Steps otherwise.
        otherwise: Vec<Step>,
    },
}

/// A scoring model.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringModel {
    /// Unique name.
    pub name: String,
    /// Record kind.
    pub kind: String,
    /// Point rules (indexed by [`ScoringModel::new`]; change them only through it).
    pub rules: Vec<ScoreRule>,
    /// Half-life of points.
    pub half_life: Option<Duration>,
    /// Thresholds.
    pub thresholds: Vec<Threshold>,
    /// Positions in `rules` of the event rules, by event type, and of the
    /// attribute rules: an event looks at only the rules it can trigger.
    index: ScoringIndex,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ScoringIndex {
    /// Looked up by every event in every model of its record's kind, with a
    /// hash cheaper than SipHash (3% of issue 6's benchmark with SipHash).
    by_event: FxHashMap<String, Vec<usize>>,
    attributes: Vec<usize>,
    /// Where a record keeps each rule's part.
    slots: RuleSlots,
    /// By rule position: the rule's slot.
    slot_of_rule: Vec<usize>,
    /// By rule position: the user fields an attribute rule's condition
    /// reads, or `None` when it reads anything else.
    reads: Vec<Option<Vec<String>>>,
}

impl ScoringModel {
    /// A model with its rule index built.
    pub fn new(
        name: String,
        kind: String,
        rules: Vec<ScoreRule>,
        half_life: Option<Duration>,
        thresholds: Vec<Threshold>,
    ) -> Self {
        let mut index = ScoringIndex::default();
        for (position, rule) in rules.iter().enumerate() {
            match &rule.trigger {
                ScoreTrigger::Event(on, _) => {
                    index.by_event.entry(on.clone()).or_default().push(position);
                }
                ScoreTrigger::Attribute(_) => index.attributes.push(position),
            }
            let reads = match &rule.trigger {
                ScoreTrigger::Attribute(when) => super::expr::fields_read(&when.source, &kind)
                    .map(|fields| fields.into_iter().map(str::to_owned).collect()),
                ScoreTrigger::Event(..) => None,
            };
            index.reads.push(reads);
        }
        let held = |rule: &ScoreRule| matches!(rule.trigger, ScoreTrigger::Attribute(_));
        (index.slots, index.slot_of_rule) =
            RuleSlots::new(rules.iter().map(|r| (r.name.as_str(), held(r))));
        ScoringModel {
            name,
            kind,
            rules,
            half_life,
            thresholds,
            index,
        }
    }

    /// The rules an event of this type can change, in rule order: its
    /// event rules and every attribute rule, each with its slot and the
    /// user fields it reads (`None`: it may read anything).
    pub fn rules_for(
        &self,
        event_type: &str,
    ) -> impl Iterator<Item = (&ScoreRule, usize, Option<&[String]>)> {
        let on = self
            .index
            .by_event
            .get(event_type)
            .map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (
            on.iter().peekable(),
            self.index.attributes.iter().peekable(),
        );
        std::iter::from_fn(move || {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(_), None) => a.next(),
                _ => b.next(),
            };
            let &i = next?;
            Some((
                self.rules.get(i)?,
                *self.index.slot_of_rule.get(i)?,
                self.index.reads.get(i)?.as_deref(),
            ))
        })
    }

    /// Where a record keeps each rule's part.
    pub fn slots(&self) -> &RuleSlots {
        &self.index.slots
    }
}

/// A scoring rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRule {
    /// Name in the ledger (given, or position and trigger).
    pub name: String,
    /// Event rule or attribute rule.
    pub trigger: ScoreTrigger,
    /// Points.
    pub points: f64,
    /// Cap.
    pub max: Option<f64>,
}

/// What earns the points.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreTrigger {
    /// An event, optionally with a condition.
    Event(String, Option<Condition>),
    /// An attribute condition, counted once while true.
    Attribute(Condition),
}

/// A threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Unique in the model.
    pub name: String,
    /// Score at which it fires.
    pub at: f64,
    /// Actions on crossing.
    pub actions: Vec<Action>,
}

/// An email template file.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailTemplate {
    /// Base name.
    pub name: String,
    /// Markdown, HTML or text.
    pub format: BodyFormat,
    /// Subject from the front matter.
    pub subject: Option<TextTemplate>,
    /// Body.
    pub body: TextTemplate,
}

/// A source: a webhook from another tool, mapped to events (SPEC §3.10).
#[derive(Debug, PartialEq)]
pub struct Source {
    /// Unique name; served at `POST /hooks/NAME`.
    pub name: String,
    /// How a delivery is proved to come from the sender.
    pub verify: Verification,
    /// The events a payload may give, in order.
    pub events: Vec<SourceEvent>,
}

/// A shared secret, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(pub String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// How a source's deliveries are verified before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Nothing is checked (`verify: none`; validation warns).
    None,
    /// HMAC-SHA256 of the raw body in `header`, after `prefix`.
    Hmac {
        /// The header with the signature.
        header: String,
        /// Text before the signature, e.g. `sha256=`.
        prefix: String,
        /// Hex or base64.
        encoding: SignatureEncoding,
        /// The key.
        secret: SigningSecret,
    },
    /// `t=TIMESTAMP,v1=HEX` in `header`, over `TIMESTAMP.BODY`.
    Timestamped {
        /// The header with the signature.
        header: String,
        /// The key.
        secret: SigningSecret,
        /// Oldest timestamp accepted.
        tolerance: Duration,
    },
    /// Standard Webhooks.
    Standard {
        /// The key (`whsec_` base64, or the text's bytes).
        secret: SigningSecret,
        /// Oldest timestamp accepted.
        tolerance: Duration,
    },
    /// A shared secret in `header`, or in `?token=` when no header is named.
    Token {
        /// The header with the token.
        header: Option<String>,
        /// The token.
        secret: SigningSecret,
    },
}

/// One event a source's payload may give.
#[derive(Debug, PartialEq)]
pub struct SourceEvent {
    /// Only when this holds.
    pub condition: Option<Condition>,
    /// One event per item of this list, as `item`.
    pub for_each: Option<ValueExpr>,
    /// Event type.
    pub event_type: TextTemplate,
    /// Idempotency key.
    pub id: Option<TextTemplate>,
    /// Record kind.
    pub kind: TextTemplate,
    /// Record id.
    pub record_id: TextTemplate,
    /// Record fields.
    pub fields: Vec<(String, MappedValue)>,
    /// Event data.
    pub data: Vec<(String, MappedValue)>,
}

/// A value of a source event's `fields` or `data`.
#[derive(Debug, PartialEq)]
pub enum MappedValue {
    /// One `{{ ... }}`: its value, with its JSON type.
    Value(ValueExpr),
    /// Anything else: a JSON value whose strings are templates.
    Json(JsonTemplate),
}

/// A workflow test.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowTest {
    /// Unique name.
    pub name: String,
    /// Start of the virtual clock.
    pub start: chrono::DateTime<chrono::FixedOffset>,
    /// Events and payloads with their offsets from the start.
    pub events: Vec<TestInput>,
    /// Clock runs until start + this.
    pub until: Duration,
    /// Expected timeline entries, in order: (entry kind, fields to match).
    pub expect: Vec<(String, Json)>,
    /// Entries that must not appear.
    pub expect_not: Vec<(String, Json)>,
}

/// What a workflow test feeds in at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum TestInput {
    /// An event, as posted to `/v1/events`.
    Event(TestEvent),
    /// A payload posted to a source (not signed).
    Payload {
        /// Offset from the start.
        at: Duration,
        /// The source's name.
        source: String,
        /// The JSON body.
        payload: Json,
        /// Headers, lower-case names.
        headers: BTreeMap<String, String>,
    },
}

impl TestInput {
    /// Offset from the start.
    pub fn at(&self) -> Duration {
        match self {
            TestInput::Event(e) => e.at,
            TestInput::Payload { at, .. } => *at,
        }
    }
}

/// An event of a workflow test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    /// Offset from the start.
    pub at: Duration,
    /// Optional id.
    pub id: Option<String>,
    /// Event type.
    pub event_type: String,
    /// Record kind.
    pub kind: String,
    /// Record id.
    pub record_id: String,
    /// Fields merged into the record.
    pub fields: BTreeMap<String, Json>,
    /// Event data.
    pub data: BTreeMap<String, Json>,
}
