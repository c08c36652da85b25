//! The workflow files as written: typed YAML with source positions.
//!
//! These types mirror SPEC §3 one to one. They are only read, never run:
//! `compile` checks them and turns them into [`crate::config::Workflows`].
//! `dealflow schema` derives the JSON Schema for editors from these same
//! types, so the schema and the parser cannot disagree. Enums are externally
//! tagged (`- wait: 3d`) because flatten/untagged lose error positions.

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// A value with the place in the file it was read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Located<T>(pub serde_saphyr::Spanned<T>);

impl<T> Located<T> {
    /// The value itself.
    pub fn get(&self) -> &T {
        &self.0.value
    }
    /// 1-based line and column where the value starts.
    pub fn line_col(&self) -> (u64, u64) {
        let at = self.0.referenced;
        (at.line(), at.column())
    }
    /// Byte offset of the value in its file, when known.
    pub fn byte_offset(&self) -> Option<usize> {
        self.0
            .referenced
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok())
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}
impl<T: Eq> Eq for Located<T> {}
impl<T: Ord> PartialOrd for Located<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Located<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.get().cmp(other.get())
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A text with its position: names, expressions, templates, durations.
pub type Text = Located<String>;

/// One workflow file; every section is optional and merged across files.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Mail transport, sender, limits, public URL (in one file at most).
    pub settings: Option<Located<SettingsSpec>>,
    /// Send windows by name.
    #[serde(default)]
    pub calendars: BTreeMap<Text, CalendarSpec>,
    /// People and teams.
    pub team: Option<TeamSpec>,
    /// Stage gating and stall thresholds.
    #[serde(default)]
    pub pipelines: Vec<PipelineSpec>,
    /// Trigger → condition → actions.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Outreach cadences.
    #[serde(default)]
    pub sequences: Vec<SequenceSpec>,
    /// Lead-scoring models.
    #[serde(default)]
    pub scoring: Vec<ScoringSpec>,
    /// Webhooks from other tools, mapped to events.
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Workflow tests run by `dealflow test`.
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// `settings:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    /// Base URL of unsubscribe links, e.g. `https://flows.acme.example`.
    pub public_url: Option<Text>,
    /// Zone of schedules without their own (default UTC).
    pub timezone: Option<Text>,
    /// Email transport and sender.
    pub email: Option<EmailSettingsSpec>,
    /// Webhook delivery.
    pub webhooks: Option<WebhookSettingsSpec>,
    /// Retry policy for deliveries.
    pub retry: Option<RetrySpec>,
    /// How long run history is kept (default 90d).
    pub keep_runs: Option<Text>,
    /// How long handled events are kept (default 90d, at least 7d: an
    /// event id is remembered for deduplication as long).
    pub keep_events: Option<Text>,
    /// IMAP mailboxes to read replies, bounces and auto-replies from.
    #[serde(default)]
    pub mailboxes: Vec<MailboxSpec>,
    /// The text-message provider (`sms:` actions and steps).
    pub sms: Option<SmsSettingsSpec>,
}

/// `settings.sms`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsSettingsSpec {
    /// `twilio` (default) or `http` (a generic JSON POST).
    pub provider: Option<Located<SmsProvider>>,
    /// Base URL of the provider's API (Twilio: `https://api.twilio.com`).
    pub url: Option<Text>,
    /// Account (Twilio's Account SID).
    pub account: Option<Text>,
    /// API token (Twilio's Auth Token; it also signs Twilio's webhooks); use `${VAR}`.
    pub token: Text,
    /// Sending number, E.164 (`+15551230000`).
    pub from: Text,
    /// Never text in these hours of the recipient's zone, e.g. `21:00-08:00`.
    pub quiet_hours: Option<Text>,
}

/// Who carries texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsProvider {
    /// Twilio's Messages API (form-encoded, basic auth).
    Twilio,
    /// A JSON POST to `url` with a bearer token.
    Http,
}

/// `settings.mailboxes` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxSpec {
    /// Unique name, shown in `/v1/status`.
    pub name: Text,
    /// `imaps://USER:PASSWORD@HOST[:PORT]/FOLDER`, `imap://...?tls=required`
    /// (STARTTLS), or plain `imap://` (loopback only); use `${VAR}` for the password.
    pub url: Text,
    /// Which messages are replies: `thread` (default) or `thread_or_sender`.
    #[serde(rename = "match")]
    pub matching: Option<Located<MatchMode>>,
    /// What to do with a message once handled: `leave` (default), `mark_seen`
    /// or `move:FOLDER`.
    pub after: Option<Text>,
    /// How often to look when IDLE is not offered, and as a safety net (default 60s).
    pub poll: Option<Text>,
}

/// Which messages of a mailbox count as replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Only messages naming one of our messages (`In-Reply-To`, `References`).
    Thread,
    /// Those, and messages from the address of a record in an active enrollment.
    ThreadOrSender,
}

/// `settings.email`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSettingsSpec {
    /// `smtp://user:pass@host:587`, `smtps://...` or `maildir:PATH`.
    pub transport: Option<Text>,
    /// Sender when the record has no owner, e.g. `Acme Sales <sales@acme.example>`.
    pub from: Option<Text>,
    /// Postal address footer of prospect emails.
    pub postal_address: Option<Text>,
    /// Sending limits; excess waits, never dropped.
    pub limits: Option<LimitsSpec>,
    /// What to do with a send interrupted by a crash.
    pub on_uncertain: Option<Located<OnUncertain>>,
}

/// What happens to an email whose send was interrupted by a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUncertain {
    /// Send again with the same Message-ID (the receiver can deduplicate).
    Resend,
    /// Keep it and report it for a person to decide.
    Hold,
}

/// `settings.email.limits`: each `N/s`, `N/m`, `N/h` or `N/d`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Per sending address.
    pub per_mailbox: Option<Text>,
    /// Per recipient domain.
    pub per_domain: Option<Text>,
    /// Touches to one prospect across all workflows.
    pub per_contact: Option<Text>,
}

/// `settings.webhooks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettingsSpec {
    /// Hosts allowed even when they resolve to private or loopback addresses.
    #[serde(default)]
    pub allow_hosts: Vec<Text>,
    /// Time limit of one webhook call (default 10s).
    pub timeout: Option<Text>,
}

/// `settings.retry`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Delay before the first retry (default 2s).
    pub first: Option<Text>,
    /// Longest delay between tries (default 1h).
    pub max_delay: Option<Text>,
    /// Tries before giving up (default 12).
    pub attempts: Option<Located<u32>>,
}

/// A send window.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// IANA zone used when the recipient's zone is unknown.
    pub timezone: Text,
    /// Open days, `mon`..`sun` (default every day).
    pub days: Option<Vec<Text>>,
    /// Open hours, `HH:MM-HH:MM` (default all day).
    pub hours: Option<Text>,
    /// Closed dates, `YYYY-MM-DD`.
    #[serde(default)]
    pub holidays: Vec<Text>,
}

/// `team:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// Everyone who can own records or receive tasks.
    #[serde(default)]
    pub people: Vec<PersonSpec>,
    /// Named groups of people (by email) for assignment.
    #[serde(default)]
    pub teams: BTreeMap<Text, Vec<Text>>,
}

/// One person of the team.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonSpec {
    /// Address; also the person's name in `owner:` and `to:`.
    pub email: Text,
    /// Display name.
    pub name: Option<Text>,
    /// IANA zone of the person.
    pub timezone: Option<Text>,
    /// Email of the person's manager (escalations).
    pub manager: Option<Text>,
}

/// A pipeline: ordered stages of one record kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Unique name.
    pub name: Text,
    /// The record kind that moves through it.
    #[serde(rename = "for")]
    pub kind: Text,
    /// Whether records may move to an earlier stage (default false).
    #[serde(default)]
    pub allow_backward: bool,
    /// Stages in order.
    pub stages: Vec<StageSpec>,
    /// The record field that holds a deal's value (the forecast's money).
    pub value: Option<Text>,
}

/// One stage of a pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique within the pipeline.
    pub name: Text,
    /// Entry requirements.
    #[serde(default)]
    pub require: Vec<Located<Requirement>>,
    /// Exit requirements.
    #[serde(default)]
    pub exit_require: Vec<Located<Requirement>>,
    /// Emit `stage.stalled` after this long in the stage.
    pub stall_after: Option<Text>,
    /// Emit it again every so long while still stalled.
    pub stall_repeat: Option<Text>,
    /// Marks a closing stage reachable from any stage.
    pub outcome: Option<Located<Outcome>>,
    /// The chance a deal in this stage is won, 0 to 1 (needs the
    /// pipeline's `value:`; outcome stages are 1 and 0).
    pub probability: Option<Located<f64>>,
}

/// How a deal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Closed won.
    Won,
    /// Closed lost.
    Lost,
}

/// A stage requirement: a field name, or a check with a message.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// This field must be present and non-empty.
    Field(String),
    /// This expression must hold.
    Check(CheckSpec),
}

/// `{check, message}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// A condition, e.g. `deal.amount > 0`.
    pub check: Text,
    /// Shown when the check fails.
    pub message: Option<Text>,
}

/// `rules:` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name, shown in run history.
    pub name: Text,
    /// What the rule is for, for readers.
    pub description: Option<Text>,
    /// The record kind; puts `KIND` in scope and checks it.
    #[serde(rename = "for")]
    pub kind: Option<Text>,
    /// Event type(s), `*`, or a schedule.
    pub on: Located<Trigger>,
    /// Condition (an expression).
    #[serde(rename = "if")]
    pub condition: Option<Text>,
    /// For schedule rules: run once per matching record.
    pub for_each: Option<ForEachSpec>,
    /// Actions, in order.
    #[serde(rename = "do")]
    pub actions: Vec<Located<ActionSpec>>,
}

/// `on:` of a rule.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// One event type, or `*`.
    One(String),
    /// Several event types.
    Many(Vec<Text>),
    /// A cron schedule.
    Schedule(ScheduleSpec),
}

/// `on: {schedule: ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Crontab line: 5 fields, or 6 with seconds first.
    pub schedule: Text,
    /// IANA zone (default `settings.timezone`, else UTC).
    pub timezone: Option<Text>,
    /// What a schedule missed while the daemon was down does.
    pub catch_up: Option<Located<CatchUp>>,
}

/// Missed schedule slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire once for the latest missed slot.
    Latest,
    /// Wait for the next slot.
    Skip,
}

/// `for_each:` of a schedule rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// Record kind to go through.
    pub kind: Text,
    /// Which of them (an expression).
    #[serde(rename = "if")]
    pub condition: Option<Text>,
}

/// One `do:` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpec {
    /// Email the record's contact.
    Email(EmailSpec),
    /// Internal email to a person of the team.
    Notify(NotifySpec),
    /// HTTP call.
    Webhook(WebhookSpec),
    /// Queue a task for a person.
    Task(TaskSpec),
    /// Update record fields (values are templates).
    Set(BTreeMap<String, Located<Json>>),
    /// Request a gated stage move.
    Move(Text),
    /// Set the owner.
    Assign(AssignSpec),
    /// Change owner with a context note and a task for the receiver.
    Handoff(HandoffSpec),
    /// Enroll in a sequence.
    Enroll(Text),
    /// Leave a sequence, or `all`.
    Unenroll(Text),
    /// Adjust a score.
    Score(ScoreActionSpec),
    /// Raise a custom event on the same record.
    Emit(EmitSpec),
    /// Text the record's phone.
    Sms(SmsSpec),
}

/// `sms:` action or step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsSpec {
    /// Recipient, E.164 (default: the record's `phone` field).
    pub to: Option<Text>,
    /// The text (a template).
    pub body: Text,
}

/// `email:` action or step.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// A template under `templates/`, by base name.
    pub template: Option<Text>,
    /// Inline subject (with `body`, instead of `template`).
    pub subject: Option<Text>,
    /// Inline body (Markdown).
    pub body: Option<Text>,
    /// Recipient (default: the record's `email` field).
    pub to: Option<Text>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<Text>,
    /// A step id of the same sequence whose thread to reply in.
    pub thread: Option<Text>,
}

/// `notify:` action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// `owner`, `manager` or a team member's email.
    pub to: Text,
    /// Subject (a template).
    pub subject: Option<Text>,
    /// A template under `templates/`.
    pub template: Option<Text>,
    /// Inline body (Markdown).
    pub body: Option<Text>,
}

/// `webhook:` action or step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// URL (a template).
    pub url: Text,
    /// HTTP method (default POST).
    pub method: Option<Text>,
    /// Extra headers (values are templates).
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// JSON body; string values are templates.
    pub body: Option<Located<Json>>,
    /// Signing secret (Standard Webhooks); use `${VAR}`.
    pub secret: Option<Text>,
}

/// `task:` action or step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Title (a template).
    pub title: Text,
    /// Email of the person (default: the record owner).
    pub owner: Option<Text>,
    /// Due after this long.
    pub due: Option<Text>,
    /// Notes (a template).
    pub notes: Option<Text>,
}

/// `assign:` action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignSpec {
    /// Pick from this team.
    pub team: Option<Text>,
    /// How to pick (default round_robin).
    pub strategy: Option<Located<Strategy>>,
    /// Or this person, by email.
    pub owner: Option<Text>,
}

/// How a team member is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In turn, fair across restarts.
    RoundRobin,
    /// The one with the fewest open tasks.
    LeastLoaded,
}

/// `handoff:` action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffSpec {
    /// A team name or a person's email.
    pub to: Text,
    /// Fields that must be present; otherwise `handoff.rejected`.
    #[serde(default)]
    pub require: Vec<Text>,
    /// Context note for the receiver (a template).
    pub note: Option<Text>,
    /// How to pick within a team (default round_robin).
    pub strategy: Option<Located<Strategy>>,
    /// Title of the receiver's task (a template).
    pub task: Option<Text>,
}

/// `score:` action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreActionSpec {
    /// Scoring model name.
    pub model: Text,
    /// Points to add (negative to remove).
    pub points: Located<f64>,
}

/// `emit:` action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    /// Custom event type.
    #[serde(rename = "type")]
    pub event_type: Text,
    /// Event data (string values are templates).
    pub data: Option<Located<Json>>,
}

/// `sequences:` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Unique name.
    pub name: Text,
    /// Record kind enrolled.
    #[serde(rename = "for")]
    pub kind: Option<Text>,
    /// Events that stop the enrollment (default reply, unsubscribe, bounce).
    pub exit_on: Option<Vec<Text>>,
    /// `never` (default) or a duration after which a record may enroll again.
    pub reenroll: Option<Text>,
    /// A calendar name, or an inline calendar.
    pub send_window: Option<Located<NameOr<CalendarSpec>>>,
    /// Recipient's zone (a template), e.g. `{{ lead.timezone }}`.
    pub recipient_timezone: Option<Text>,
    /// What reload does with enrollments waiting on a removed step.
    pub on_step_removed: Option<Located<OnStepRemoved>>,
    /// Steps in order.
    pub steps: Vec<Located<StepSpec>>,
}

/// Enrollments on a step that a reload removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStepRemoved {
    /// They exit with reason `definition_changed`.
    Exit,
    /// They continue with the following step.
    Next,
}

/// One sequence step: `id` plus exactly one of the step kinds.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique in the sequence; required on all but `wait` and `exit`.
    pub id: Option<Text>,
    /// The id this step had before, so reload keeps enrollments on it.
    pub renamed_from: Option<Text>,
    /// Send an email.
    pub email: Option<EmailSpec>,
    /// Queue a task.
    pub task: Option<TaskSpec>,
    /// Call a webhook.
    pub webhook: Option<WebhookSpec>,
    /// Send a text.
    pub sms: Option<SmsSpec>,
    /// Wait this long (calendar time).
    pub wait: Option<Text>,
    /// Leave the sequence with this reason.
    pub exit: Option<Text>,
    /// Branch on a condition.
    #[serde(rename = "if")]
    pub condition: Option<Text>,
    /// Steps when the condition holds.
    #[serde(default)]
    pub then: Vec<Located<StepSpec>>,
    /// Steps otherwise.
    #[serde(default, rename = "else")]
    pub otherwise: Vec<Located<StepSpec>>,
}

/// `scoring:` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpec {
    /// Unique name (`record.scores.NAME`).
    pub name: Text,
    /// Record kind scored.
    #[serde(rename = "for")]
    pub kind: Text,
    /// Point rules.
    pub rules: Vec<Located<ScoreRuleSpec>>,
    /// Score decay.
    pub decay: Option<DecaySpec>,
    /// Thresholds whose crossing runs actions.
    #[serde(default)]
    pub thresholds: Vec<ThresholdSpec>,
}

/// One scoring rule: an event rule (`on`) or an attribute rule (`when`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRuleSpec {
    /// Name shown in the ledger.
    pub name: Option<Text>,
    /// Event type that earns the points.
    pub on: Option<Text>,
    /// Condition on the event.
    #[serde(rename = "if")]
    pub condition: Option<Text>,
    /// Attribute condition, counted once while true.
    pub when: Option<Text>,
    /// Points (negative allowed).
    pub points: Located<f64>,
    /// Most points this rule can give.
    pub max: Option<Located<f64>>,
}

/// `decay:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecaySpec {
    /// Time for points to halve.
    pub half_life: Text,
}

/// A score threshold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Unique in the model.
    pub name: Text,
    /// Fires when the score rises to or past this.
    pub at: Located<f64>,
    /// Actions on crossing.
    #[serde(rename = "do", default)]
    pub actions: Vec<Located<ActionSpec>>,
}

/// `sources:` item: a webhook served at `POST /hooks/NAME`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Unique name; the path is `/hooks/NAME`.
    pub name: Text,
    /// How a delivery is proved to come from the sender, or `none`.
    pub verify: Option<Located<NameOr<VerifySpec>>>,
    /// Events a payload gives (zero, one or several).
    #[serde(default)]
    pub events: Vec<Located<SourceEventSpec>>,
}

/// `verify:` of a source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// `hmac`, `timestamped`, `standard` or `token`.
    pub scheme: Located<VerifyScheme>,
    /// The header carrying the signature or token.
    pub header: Option<Text>,
    /// The shared secret; use `${VAR}`.
    pub secret: Option<Text>,
    /// Text before the signature in the header, e.g. `sha256=` (hmac).
    pub prefix: Option<Text>,
    /// How the signature is written: `hex` (default) or `base64` (hmac).
    pub encoding: Option<Located<SignatureEncoding>>,
    /// Oldest timestamp accepted (timestamped, standard; default 5m).
    pub tolerance: Option<Text>,
}

/// How a source's deliveries are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyScheme {
    /// HMAC-SHA256 of the raw body in a header (GitHub, Typeform, Cal.com).
    Hmac,
    /// `t=TIMESTAMP,v1=HEX` over `TIMESTAMP.BODY` (Stripe, Calendly).
    Timestamped,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// A shared secret in a header or `?token=`.
    Token,
}

/// How an HMAC signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
}

/// One event a source's payload may give.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceEventSpec {
    /// Only when this holds (an expression over `payload`, `headers`).
    #[serde(rename = "if")]
    pub condition: Option<Text>,
    /// One event per item of this list (an expression), as `item`.
    pub for_each: Option<Text>,
    /// Event type (a template).
    #[serde(rename = "type")]
    pub event_type: Text,
    /// Idempotency key (a template): a redelivered payload is a duplicate.
    pub id: Option<Text>,
    /// The record it happened to; kind and id are templates.
    pub record: SourceRecordSpec,
    /// Record fields; a value that is one `{{ ... }}` keeps its JSON type.
    #[serde(default)]
    pub fields: BTreeMap<String, Located<Json>>,
    /// Event data; a value that is one `{{ ... }}` keeps its JSON type.
    #[serde(default)]
    pub data: BTreeMap<String, Located<Json>>,
}

/// `record:` of a source event.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRecordSpec {
    /// Record kind (a template).
    pub kind: Text,
    /// Record id (a template).
    pub id: Text,
}

/// `tests:` item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Unique name.
    pub name: Text,
    /// Start of the virtual clock (RFC 3339).
    pub start: Text,
    /// Events fed in.
    pub events: Vec<Located<TestEventSpec>>,
    /// How long to run the clock after the start (default 30d).
    pub until: Option<Text>,
    /// Timeline entries expected, in order (subset match).
    #[serde(default)]
    pub expect: Vec<Located<BTreeMap<String, Json>>>,
    /// Timeline entries that must not appear.
    #[serde(default)]
    pub expect_not: Vec<Located<BTreeMap<String, Json>>>,
}

/// An event of a test or simulation, or a payload posted to a source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEventSpec {
    /// Offset from the start, e.g. `+4d`.
    pub at: Option<Text>,
    /// Optional event id.
    pub id: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Option<Text>,
    /// The record it happened to.
    pub record: Option<RecordRefSpec>,
    /// Event data.
    #[serde(default)]
    pub data: BTreeMap<String, Json>,
    /// A source to post `payload` to, instead of an event (not signed).
    pub source: Option<Text>,
    /// The JSON body posted to `source`.
    pub payload: Option<Located<Json>>,
    /// Headers posted with `payload` (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `{kind, id, fields}` of a test event.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRefSpec {
    /// Record kind.
    pub kind: Text,
    /// Record id.
    pub id: String,
    /// Fields merged into the record.
    #[serde(default)]
    pub fields: BTreeMap<String, Json>,
}

/// Either a name of something defined elsewhere or the thing written inline.
#[derive(Debug, Clone)]
pub enum NameOr<T> {
    /// A reference by name.
    Name(String),
    /// Defined in place.
    Inline(T),
}

/// A schema that is a string or `T`'s schema.
fn string_or(
    generator: &mut schemars::SchemaGenerator,
    other: schemars::Schema,
) -> schemars::Schema {
    let string = generator.subschema_for::<String>();
    schemars::json_schema!({ "anyOf": [string, other] })
}

impl<T: JsonSchema> JsonSchema for NameOr<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("NameOr{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inline = generator.subschema_for::<T>();
        string_or(generator, inline)
    }
}

impl JsonSchema for Requirement {
    fn schema_name() -> Cow<'static, str> {
        "Requirement".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let check = generator.subschema_for::<CheckSpec>();
        string_or(generator, check)
    }
}

impl JsonSchema for Trigger {
    fn schema_name() -> Cow<'static, str> {
        "Trigger".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let list = generator.subschema_for::<Vec<String>>();
        let schedule = generator.subschema_for::<ScheduleSpec>();
        let string = generator.subschema_for::<String>();
        schemars::json_schema!({ "anyOf": [string, list, schedule] })
    }
}

/// Reads a string or a mapping without buffering, so positions inside the
/// mapping survive (serde's `untagged` would lose them).
impl<'de, T: Deserialize<'de>> Deserialize<'de> for NameOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NameOrVisitor(std::marker::PhantomData))
    }
}

struct NameOrVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for NameOrVisitor<T> {
    type Value = NameOr<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name or a mapping")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(NameOr::Name(v.to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(NameOr::Inline)
    }
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match NameOr::<CheckSpec>::deserialize(d)? {
            NameOr::Name(field) => Requirement::Field(field),
            NameOr::Inline(check) => Requirement::Check(check),
        })
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TriggerVisitor)
    }
}

struct TriggerVisitor;

impl<'de> Visitor<'de> for TriggerVisitor {
    type Value = Trigger;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event type, a list of event types, or {schedule: \"CRON\"}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Trigger, E> {
        Ok(Trigger::One(v.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Trigger, A::Error> {
        let mut types = Vec::new();
        while let Some(t) = seq.next_element::<Text>()? {
            types.push(t);
        }
        Ok(Trigger::Many(types))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Trigger, A::Error> {
        ScheduleSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Trigger::Schedule)
    }
}
