//! Delivery: the outbox worker that hands emails to a mail server (or a
//! folder of `.eml` files), texts to an SMS provider, and calls webhooks.
//!
//! Each row moves `pending → sending → sent | failed → … | dead`, and the
//! `sending` mark is committed and flushed before the row is handed over,
//! so after a crash the rows that might have gone out are known and follow
//! `settings.email.on_uncertain`. A row's identity (Message-ID, `webhook-id`,
//! `Idempotency-Key`) is derived from its id, never made up per attempt, so
//! a resend is recognisably the same message. Right before an email is
//! handed over its stop conditions are checked again (unsubscribed, bounced,
//! enrollment exited), so only an email already handed over can still
//! arrive after a prospect stops the cadence.
//!
//! Owns: the outbox rows' life after the engine queued them, transports,
//! limits, unsubscribe links. Never: decides what to send (the engine does)
//! or starts a hand-over before its `sending` mark is flushed.

pub mod health;
pub mod inbound;
pub mod limits;
pub mod mailer;
pub mod message;
pub mod retry;
pub mod sms;
pub mod unsubscribe;
pub mod webhook;

use crate::clock::Clock;
use crate::config::Workflows;
use crate::state::{
    ActionOutcome, Audience, BuiltinEvent, Delivery, NewEvent, OutboxEntry, OutboxStatus, Run,
};
use crate::store::{DeliveryWrites, Store, StoreError};
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use limits::SendLog;
use mailer::Mailer;
use message::Built;
use retry::Failure;
use serde_json::{Value as Json, json};
use sms::SmsClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use unsubscribe::UnsubscribeKey;
use webhook::WebhookClient;

/// Rows handed over at once (emails go through the SMTP pool together).
const BATCH: usize = 64;

/// Longest idle sleep. The store rings when rows are written and the next
/// due time is known, so this only bounds what nothing rings for: the wall
/// clock jumping.
const IDLE_CAP: Duration = Duration::from_secs(60);

/// What the delivery worker needs.
pub struct Outbox<S: Store> {
    /// The store.
    pub store: Arc<S>,
    /// The running workflows (settings decide transports and limits).
    pub workflows: Arc<ArcSwap<Workflows>>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Signs unsubscribe links.
    pub key: UnsubscribeKey,
    /// Where the default maildir lives.
    pub data_dir: PathBuf,
    /// Failures on the sender's side, for `/v1/status`.
    pub health: Arc<health::DeliveryHealth>,
}

/// Transports and limits of one workflows version.
struct Channels {
    version: String,
    mailer: Result<Mailer, String>,
    webhooks: Result<WebhookClient, String>,
    texts: Result<SmsClient, String>,
    limits: crate::config::workflows::Limits,
    /// What the limits counted, shared by every version's channels.
    sends: Arc<SendLog>,
    /// Masked in every failure before it is stored or logged.
    secrets: crate::config::environment::Secrets,
}

impl Channels {
    fn new(workflows: &Workflows, data_dir: &std::path::Path, sends: Arc<SendLog>) -> Self {
        let settings = &workflows.settings;
        Channels {
            version: workflows.version.clone(),
            mailer: Mailer::from_transport(settings.email_transport.as_deref(), data_dir),
            webhooks: WebhookClient::new(settings),
            texts: match &settings.sms {
                Some(sms) => SmsClient::new(sms, settings.public_url.as_deref()),
                None => {
                    Err("texts need settings.sms, which the workflows no longer have".to_owned())
                }
            },
            limits: settings.limits.clone(),
            sends,
            secrets: workflows.secrets.clone(),
        }
    }
}

/// A claimed row and what to hand over.
enum Job {
    Email(Box<Built>),
    Webhook,
    Sms,
}

/// What happened to a row this round.
enum Handed {
    Sent(Option<String>),
    Failed(Failure),
    /// Its `sending` mark could not be flushed, so it was not handed
    /// over; it stays `sending` in the store until the next start.
    Kept,
}

/// The flush of one step's commit. The hand-overs it claimed wait for it
/// (their `sending` marks must be durable first); the worker does not, so
/// it records and claims the next rows while the disk syncs.
type Flushing = futures_util::future::Shared<futures_util::future::BoxFuture<'static, bool>>;

/// Starts flushing what the worker committed last, on a task of its own so
/// it completes whether or not a hand-over waits for it.
fn flushing<S: Store>(store: Arc<S>) -> Flushing {
    use futures_util::FutureExt;
    let flushed = async move {
        match store.flush_soon().await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "Delivery could not flush its writes; rows it claimed stay in sending until the next start.");
                false
            }
        }
    }
    .boxed()
    .shared();
    tokio::spawn(flushed.clone());
    flushed
}

/// A row being handed over, and how it went.
type InFlight = JoinSet<(OutboxEntry, Handed)>;

/// Longest a finished hand-over waits to be recorded with others: each
/// record is a flushed commit, and one per row would cost a flush per row.
const RECORD_WAIT: Duration = Duration::from_millis(20);

/// Starts the delivery worker; it stops when `cancel` fires, after the
/// rows in hand are recorded.
///
/// Rows are handed over concurrently, up to [`BATCH`] at a time. Each is
/// recorded within [`RECORD_WAIT`] of finishing, with the others finished
/// by then, so a slow webhook holds up only itself. Recording and claiming
/// the next rows share one commit, and claims wait for half the slots to
/// be free: a flush per row would slow ingest, whose `202`s wait on the
/// same disk. Each claimed row waits for its commit's flush; the worker
/// does not (waiting, it was idle a quarter of the time while working off
/// a backlog). The worker sleeps until the store rings (outbox rows
/// written) or the next row is due.
pub fn spawn<S: Store>(
    outbox: Outbox<S>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = recover_interrupted(&outbox).await {
            tracing::error!(error = %e, "Could not look for interrupted sends.");
        }
        let sends = Arc::new(SendLog::default());
        if let Err(e) = remember_sends(&outbox, &sends).await {
            tracing::error!(error = %e, "Could not count the sends made before this start; limits count from now.");
        }
        let mut channels: Option<Arc<Channels>> = None;
        let mut running = InFlight::new();
        let mut finished = Vec::new();
        let mut record_now = false;
        let mut record_by: Option<tokio::time::Instant> = None;
        while !cancel.is_cancelled() {
            let snapshot = outbox.workflows.load_full();
            let current = match &channels {
                Some(c) if c.version == snapshot.version => c.clone(),
                _ => Arc::new(Channels::new(&snapshot, &outbox.data_dir, sends.clone())),
            };
            channels = Some(current.clone());
            let room = BATCH.saturating_sub(running.len());
            let room = if running.is_empty() || room >= BATCH / 2 {
                room
            } else {
                0
            };
            let recorded = if record_now {
                record_now = false;
                record_by = None;
                std::mem::take(&mut finished)
            } else {
                Vec::new()
            };
            let wait = match step(&outbox, &snapshot, current, recorded, room, &mut running) {
                Ok(()) if running.len() > BATCH / 2 => None,
                Ok(()) => Some(idle_wait(&outbox)),
                Err(e) => {
                    tracing::error!(error = %e, "Delivering failed (rows it was recording stay in sending until the next start); retrying in a second.");
                    Some(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    take_finished(joined, &mut running, &mut finished);
                    let deadline = *record_by.get_or_insert_with(|| tokio::time::Instant::now() + RECORD_WAIT);
                    record_now = finished.len() >= BATCH / 2
                        || running.is_empty()
                        || tokio::time::Instant::now() >= deadline;
                }
                _ = tokio::time::sleep_until(record_by.unwrap_or_else(tokio::time::Instant::now)), if record_by.is_some() => {
                    record_now = true;
                }
                _ = outbox.store.wakeups().outbox.notified(), if wait.is_some() => {}
                _ = outbox.clock.sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
        }
        while let Some(joined) = running.join_next().await {
            take_finished(joined, &mut running, &mut finished);
        }
        let snapshot = outbox.workflows.load_full();
        let current = Arc::new(Channels::new(&snapshot, &outbox.data_dir, sends));
        if let Err(e) = step(&outbox, &snapshot, current, finished, 0, &mut running) {
            tracing::error!(error = %e, "Recording deliveries failed; those rows stay in sending until the next start.");
        }
        // What the steps committed is durable before the worker says it stopped.
        if let Err(e) = outbox.store.flush().await {
            tracing::error!(error = %e, "Flushing the last deliveries failed; those rows stay in sending until the next start.");
        }
        tracing::info!("Delivery worker stopped.");
    })
}

/// Fills the limits' windows with the emails sent within their longest
/// period before this start, so a restart gives no contact a touch more.
/// Reads the outbox's sent rows once (nothing when no limit is set).
async fn remember_sends<S: Store>(
    outbox: &Outbox<S>,
    sends: &Arc<SendLog>,
) -> Result<(), StoreError> {
    let workflows = outbox.workflows.load_full();
    let limits = workflows.settings.limits.clone();
    if SendLog::lookback(&limits).is_none() {
        return Ok(());
    }
    let (store, sends, now) = (outbox.store.clone(), sends.clone(), outbox.clock.now());
    let from = workflows.settings.email_from.clone().unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        for status in [OutboxStatus::Sent, OutboxStatus::Sending] {
            let filter = crate::store::OutboxFilter {
                status: Some(status),
                record: None,
            };
            crate::store::for_each_item(
                |after| store.outbox_matching(&filter, after, 1_000),
                |row| sends.remember(&limits, &row, &from, now),
            )?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::backend_said(format!("counting earlier sends failed: {e}")))?
}

/// Moves a finished hand-over, and any others already done, to `finished`.
fn take_finished(
    first: Result<(OutboxEntry, Handed), tokio::task::JoinError>,
    running: &mut InFlight,
    finished: &mut Vec<(OutboxEntry, Handed)>,
) {
    let mut take = |joined: Result<_, tokio::task::JoinError>| match joined {
        Ok(pair) => finished.push(pair),
        Err(e) => {
            tracing::error!(error = %e, "A delivery task failed; its row stays in sending until the next start.")
        }
    };
    take(first);
    while let Some(joined) = running.try_join_next() {
        take(joined);
    }
}

fn idle_wait<S: Store>(outbox: &Outbox<S>) -> Duration {
    let now = outbox.clock.now();
    match outbox.store.next_outbox_due() {
        Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO).min(IDLE_CAP),
        _ => IDLE_CAP,
    }
}

/// Rows found `sending` at start were interrupted: resend them with the same
/// identity, or (emails, `on_uncertain: hold`) hold them for a person.
async fn recover_interrupted<S: Store>(outbox: &Outbox<S>) -> Result<(), StoreError> {
    let workflows = outbox.workflows.load_full();
    let now = outbox.clock.now();
    let mut changes = DeliveryWrites::default();
    for mut row in outbox.store.sending_outbox(usize::MAX)? {
        // Neither SMTP nor Twilio deduplicates a resend; webhooks carry
        // an idempotency key their receiver can.
        let hold = matches!(row.delivery, Delivery::Email { .. } | Delivery::Sms { .. })
            && workflows.settings.on_uncertain == crate::config::model::OnUncertain::Hold;
        if hold {
            row.status = OutboxStatus::Held;
            row.last_error = Some(
                "interrupted while being handed over; it may or may not have arrived. Held for a person (on_uncertain: hold)".to_owned(),
            );
            tracing::warn!(row = %row.id, "An interrupted send is held for a person to decide.");
        } else {
            row.status = OutboxStatus::Pending;
            row.next_attempt_at = Some(now);
            row.last_error = Some(
                "interrupted while being handed over; sending again with the same identity"
                    .to_owned(),
            );
            tracing::warn!(row = %row.id, "An interrupted send goes again with the same identity.");
        }
        changes.outbox([row]);
    }
    if !changes.is_empty() {
        outbox.store.commit(changes.into())?;
        outbox.store.flush().await?;
    }
    Ok(())
}

/// One commit: records `finished` hand-overs and claims up to `room` due
/// rows, then starts handing the claimed rows over, each once the commit
/// is flushed.
fn step<S: Store>(
    outbox: &Outbox<S>,
    workflows: &Arc<Workflows>,
    channels: Arc<Channels>,
    finished: Vec<(OutboxEntry, Handed)>,
    room: usize,
    running: &mut InFlight,
) -> Result<(), StoreError> {
    let now = outbox.clock.now();
    let due = match room {
        0 => Vec::new(),
        _ => outbox.store.due_outbox(now, room)?,
    };
    // Rows are large: room for all of them at once, rather than growing
    // the list (and copying the recorded rows) when the claims follow.
    let mut changes = DeliveryWrites::default();
    changes.reserve_outbox(finished.len() + due.len());
    record(outbox, workflows, finished, &mut changes);
    let jobs = claim(outbox, workflows, &channels, due, now, &mut changes)?;
    if changes.is_empty() {
        return Ok(());
    }
    outbox.store.commit(changes.into())?;
    let flushed = flushing(outbox.store.clone());
    for (row, job) in jobs {
        let (channels, flushed) = (channels.clone(), flushed.clone());
        let timestamp = now.timestamp();
        running.spawn(async move {
            let result = match flushed.await {
                true => hand_over(&row, &job, &channels, timestamp).await,
                false => Handed::Kept,
            };
            (row, result)
        });
    }
    Ok(())
}

/// Checks, builds and marks each due row into `changes`; the caller flushes
/// the `sending` marks before anything is handed over.
fn claim<S: Store>(
    outbox: &Outbox<S>,
    workflows: &Workflows,
    channels: &Channels,
    due: Vec<OutboxEntry>,
    now: DateTime<Utc>,
    changes: &mut DeliveryWrites,
) -> Result<Vec<(OutboxEntry, Job)>, StoreError> {
    let mut jobs = Vec::with_capacity(due.len());
    for mut row in due {
        if let Some(why) = stop_reason(outbox.store.as_ref(), &row)? {
            crate::telemetry::delivery(kind_of(&row), "cancelled");
            row.status = OutboxStatus::Cancelled;
            row.last_error = Some(why);
            changes.outbox([row]);
            continue;
        }
        let job = match prepare(&row, workflows, channels, &outbox.key, now) {
            Ok(job) => job,
            Err(Prepared::Deferred(deferral)) => {
                crate::telemetry::delivery(kind_of(&row), "deferred");
                row.next_attempt_at =
                    Some(now + chrono::Duration::from_std(deferral.wait).unwrap_or_default());
                row.deferrals += 1;
                row.last_error = Some(deferral.reason);
                changes.outbox([row]);
                continue;
            }
            Err(Prepared::Broken(why)) => {
                give_up(changes, row, workflows.secrets.redact(&why), now);
                continue;
            }
        };
        row.status = OutboxStatus::Sending;
        row.attempts += 1;
        changes.outbox([row.clone()]);
        jobs.push((row, job));
    }
    Ok(jobs)
}

enum Prepared {
    Deferred(limits::Deferral),
    Broken(String),
}

fn prepare(
    row: &OutboxEntry,
    workflows: &Workflows,
    channels: &Channels,
    key: &UnsubscribeKey,
    now: DateTime<Utc>,
) -> Result<Job, Prepared> {
    match &row.delivery {
        Delivery::Email { to, audience, .. } => {
            let built = message::build(row, workflows, key).map_err(Prepared::Broken)?;
            let from = built
                .message
                .envelope()
                .from()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let touch = limits::Touch::email(&from, to, *audience).about(&row.record);
            channels
                .sends
                .check(&channels.limits, touch, now)
                .map_err(Prepared::Deferred)?;
            Ok(Job::Email(Box::new(built)))
        }
        Delivery::Webhook { .. } => Ok(Job::Webhook),
        Delivery::Sms { to, zone, .. } => {
            if let Some(deferral) = quiet(workflows, zone.as_deref(), now) {
                return Err(Prepared::Deferred(deferral));
            }
            channels
                .sends
                .check(&channels.limits, limits::Touch::text(to, &row.record), now)
                .map_err(Prepared::Deferred)?;
            Ok(Job::Sms)
        }
    }
}

/// The wait until `settings.sms.quiet_hours` end in the row's zone (the
/// recipient's, else `settings.timezone`), if they hold now.
fn quiet(
    workflows: &Workflows,
    zone: Option<&str>,
    now: DateTime<Utc>,
) -> Option<limits::Deferral> {
    let hours = workflows.settings.sms.as_ref()?.quiet_hours?;
    let zone = zone
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(workflows.settings.timezone);
    let until = crate::config::send_window::quiet_until(&hours, zone, now)?;
    Some(limits::Deferral {
        wait: (until - now).to_std().unwrap_or_default(),
        reason: format!(
            "deferred by quiet_hours in {zone} until {}",
            until.with_timezone(&zone).format("%Y-%m-%d %H:%M")
        ),
    })
}

/// Why an email or text to a prospect must not go out any more, if it
/// must not.
fn stop_reason<S: Store>(store: &S, row: &OutboxEntry) -> Result<Option<String>, StoreError> {
    let (to, opted_out) = match &row.delivery {
        Delivery::Email {
            to,
            audience: Audience::Prospect,
            ..
        } => (to, "unsubscribed or bounced"),
        Delivery::Sms { to, .. } => (to, "opted out of texts"),
        _ => return Ok(None),
    };
    if store.is_suppressed(to)? {
        return Ok(Some(format!("{to} {opted_out} before it was sent")));
    }
    if store.record(&row.record)?.is_none() {
        return Ok(Some(format!("record {} no longer exists", row.record)));
    }
    let sequence = row.created_by.strip_prefix("sequence:");
    if let (Some(sequence), Some(_)) = (sequence, &row.step) {
        let exited = store.enrollments(&row.record)?.into_iter().find(|e| {
            e.sequence == sequence
                && e.status == crate::state::EnrollmentStatus::Exited
                && e.ended_at.is_some_and(|t| t >= row.created_at)
        });
        if let Some(e) = exited.filter(stops_sends) {
            return Ok(Some(format!(
                "the enrollment in {sequence} exited ({}) before it was sent",
                e.exit_reason.unwrap_or_default()
            )));
        }
    }
    Ok(None)
}

/// Exits caused by the prospect or a person stop queued sends; an `exit:`
/// step of the sequence itself comes after its own sends.
fn stops_sends(e: &crate::state::Enrollment) -> bool {
    e.exit_cause
        .is_some_and(crate::state::ExitCause::stops_queued_sends)
}

async fn hand_over(row: &OutboxEntry, job: &Job, channels: &Channels, now: i64) -> Handed {
    let result = match job {
        Job::Email(built) => match &channels.mailer {
            Ok(mailer) => mailer
                .send(built, &row.id)
                .await
                .map(|_| Some(built.message_id.clone())),
            Err(e) => Err(Failure::transient(e.clone())),
        },
        Job::Webhook => match &channels.webhooks {
            Ok(client) => client.send(row, now).await.map(|_| None),
            Err(e) => Err(Failure::transient(e.clone())),
        },
        Job::Sms => match &channels.texts {
            Ok(client) => client.send(row).await,
            Err(e) => Err(Failure::transient(e.clone())),
        },
    };
    match result {
        Ok(id) => Handed::Sent(id),
        Err(f) => Handed::Failed(f.redacted(&channels.secrets)),
    }
}

/// Adds each row's outcome, and the events it causes, to `changes`.
fn record<S: Store>(
    outbox: &Outbox<S>,
    workflows: &Workflows,
    done: Vec<(OutboxEntry, Handed)>,
    changes: &mut DeliveryWrites,
) {
    let now = outbox.clock.now();
    for (mut row, result) in done {
        let result = match result {
            // Retried like a transient failure, so the emails go once the
            // settings are fixed; counted, and never a bounce.
            Handed::Failed(Failure::Sender(reason)) => {
                outbox.health.sender_failure(now, &reason);
                Handed::Failed(Failure::transient(reason))
            }
            other => other,
        };
        match result {
            Handed::Kept => {}
            Handed::Sent(message_id) => {
                crate::telemetry::delivery(kind_of(&row), "sent");
                row.status = OutboxStatus::Sent;
                row.sent_at = Some(now);
                row.last_error = None;
                if matches!(row.delivery, Delivery::Sms { .. }) {
                    row.provider_id = message_id.clone();
                }
                if let Some(raised) = sent_event(&row, message_id, now) {
                    changes.raise([raised]);
                }
                changes.outbox([row]);
            }
            Handed::Failed(Failure::Transient {
                reason,
                retry_after,
            }) if row.attempts < workflows.settings.retry.attempts => {
                crate::telemetry::delivery(kind_of(&row), "retried");
                let wait = retry::delay(&workflows.settings.retry, row.attempts, retry_after);
                row.status = OutboxStatus::Failed;
                row.next_attempt_at =
                    Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
                tracing::info!(row = %row.id, attempt = row.attempts, %reason, "Delivery failed; will retry.");
                row.last_error = Some(reason);
                changes.outbox([row]);
            }
            Handed::Failed(failure) => {
                let why = match &failure {
                    Failure::Transient { reason, .. } => {
                        format!("{reason} (gave up after {} attempts)", row.attempts)
                    }
                    Failure::Permanent(reason)
                    | Failure::Refused(reason)
                    | Failure::Sender(reason) => reason.clone(),
                };
                let refused = matches!(failure, Failure::Refused(_));
                changes.raise(failed_event(&row, refused, &why, now));
                if let (true, Delivery::Sms { to, .. }) = (refused, &row.delivery) {
                    changes.suppress([crate::state::Suppression::new(
                        to,
                        "opted out (provider)",
                        now,
                    )]);
                }
                give_up(changes, row, why, now);
            }
        }
    }
}

/// The event a delivered row raises: `email.sent` for a prospect's email,
/// `sms.sent` for a text.
fn sent_event(row: &OutboxEntry, id: Option<String>, now: DateTime<Utc>) -> Option<NewEvent> {
    let (raised, data) = match &row.delivery {
        Delivery::Email {
            to,
            subject,
            audience: Audience::Prospect,
            ..
        } => (
            BuiltinEvent::EmailSent,
            json!({
                "to": to, "subject": subject, "message_id": id,
                "outbox_id": row.id, "step": row.step, "sequence": sequence_of(row),
            }),
        ),
        Delivery::Sms { to, .. } => (
            BuiltinEvent::SmsSent,
            json!({
                "to": to, "provider_id": id,
                "outbox_id": row.id, "step": row.step, "sequence": sequence_of(row),
            }),
        ),
        _ => return None,
    };
    Some(event(row, raised, data, now))
}

/// The event a row given up raises beside `action.failed`: a refusal of a
/// prospect's address at hand-over is a hard bounce (the cadence stops
/// and the address is suppressed, as for a DSN); a text refused because
/// its number opted out at the provider is an opt-out; any other text
/// that will not go is `sms.failed`.
fn failed_event(
    row: &OutboxEntry,
    refused: bool,
    why: &str,
    now: DateTime<Utc>,
) -> Option<NewEvent> {
    let (raised, data) = match (&row.delivery, refused) {
        (
            Delivery::Email {
                to,
                audience: Audience::Prospect,
                ..
            },
            true,
        ) => (
            BuiltinEvent::EmailBounced,
            json!({ "email": to, "status": "5.0.0", "reason": why, "outbox_id": row.id, "step": row.step }),
        ),
        (Delivery::Sms { to, .. }, true) => (
            BuiltinEvent::SmsOptedOut,
            json!({ "phone": to, "reason": why, "outbox_id": row.id, "step": row.step }),
        ),
        (Delivery::Sms { to, .. }, false) => (
            BuiltinEvent::SmsFailed,
            json!({ "phone": to, "reason": why, "outbox_id": row.id, "step": row.step }),
        ),
        _ => return None,
    };
    Some(event(row, raised, data, now))
}

/// Marks a row dead, visible in run history and as `action.failed`.
fn give_up(changes: &mut DeliveryWrites, mut row: OutboxEntry, why: String, now: DateTime<Utc>) {
    tracing::warn!(row = %row.id, reason = %why, "Delivery gave up.");
    let action = kind_of(&row);
    crate::telemetry::delivery(action, "dead");
    row.status = OutboxStatus::Dead;
    row.last_error = Some(why.clone());
    changes.runs([Run {
        id: format!("{}-delivery", row.id),
        rule: row.created_by.clone(),
        event_id: row.id.clone(),
        event_type: "delivery".to_owned(),
        record: row.record.clone(),
        version: String::new(),
        condition: None,
        matched: true,
        saw: Default::default(),
        actions: vec![ActionOutcome {
            action: action.to_owned(),
            outcome: crate::state::Outcome::Dead,
            detail: Some(why.clone()),
        }],
        at: now,
        error: Some(why.clone()),
    }]);
    let data = json!({
        "rule": row.created_by, "action": action, "reason": why,
        "outbox_id": row.id, "step": row.step,
    });
    changes.raise([event(&row, BuiltinEvent::ActionFailed, data, now)]);
    changes.outbox([row]);
}

fn kind_of(row: &OutboxEntry) -> &'static str {
    match row.delivery {
        Delivery::Email { .. } => "email",
        Delivery::Webhook { .. } => "webhook",
        Delivery::Sms { .. } => "sms",
    }
}

fn sequence_of(row: &OutboxEntry) -> Option<&str> {
    row.created_by.strip_prefix("sequence:")
}

fn event(row: &OutboxEntry, event: BuiltinEvent, data: Json, now: DateTime<Utc>) -> NewEvent {
    let id = format!("{event}/{}", row.id);
    let mut raised = NewEvent::raised(event, row.record.clone(), data, now, Some(id));
    raised.depth = row.depth;
    raised
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::state::Effects;
    use crate::state::{Enrollment, RecordKey};
    use crate::store::{KvStore, MemoryBackend, OutboxTable};

    fn outbox(dir: &std::path::Path) -> Outbox<KvStore<MemoryBackend>> {
        outbox_over(dir, MemoryBackend::default())
    }

    fn outbox_over<B: crate::store::Backend>(
        dir: &std::path::Path,
        backend: B,
    ) -> Outbox<KvStore<B>> {
        std::fs::write(
            dir.join("f.yaml"),
            "settings: { email: { from: \"A <a@us.example>\" } }\n",
        )
        .unwrap();
        let (w, d) = crate::config::load(dir, &std::collections::HashMap::new());
        let w = w.unwrap_or_else(|| panic!("{d:?}"));
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
            .unwrap()
            .to_utc();
        Outbox {
            store: Arc::new(KvStore::open(backend, "memory").unwrap()),
            workflows: Arc::new(ArcSwap::from_pointee(w)),
            clock: Arc::new(ManualClock::new(now)),
            key: UnsubscribeKey::from_bytes(&[3; 32]),
            data_dir: dir.to_path_buf(),
            health: Default::default(),
        }
    }

    fn row(id: &str, to: &str, created_at: DateTime<Utc>) -> OutboxEntry {
        let mut row = OutboxEntry::pending(
            id.into(),
            RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            crate::delivery::message::tests::email_to(
                to,
                "Hi",
                crate::state::BodyFormat::Markdown,
                Audience::Prospect,
            ),
            created_at,
            "sequence:cadence".into(),
        );
        row.step = Some("bump".into());
        row
    }

    async fn deliver(o: &Outbox<KvStore<MemoryBackend>>) {
        let w = o.workflows.load_full();
        let channels = Arc::new(Channels::new(&w, &o.data_dir, Default::default()));
        let mut running = InFlight::new();
        step(o, &w, channels.clone(), Vec::new(), BATCH, &mut running).unwrap();
        let mut finished = Vec::new();
        while let Some(joined) = running.join_next().await {
            take_finished(joined, &mut running, &mut finished);
        }
        step(o, &w, channels, finished, 0, &mut running).unwrap();
    }

    /// Lead L1 and its enrollment in `cadence`, exited at `now`.
    fn exited_lead(
        now: DateTime<Utc>,
        reason: &str,
        cause: crate::state::ExitCause,
    ) -> (crate::state::Record, Enrollment) {
        let key = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let exited = Enrollment {
            record: key.clone(),
            sequence: "cadence".into(),
            enrolled_at: now,
            status: crate::state::EnrollmentStatus::Exited,
            next_step: None,
            exit_reason: Some(reason.into()),
            exit_cause: Some(cause),
            ended_at: Some(now),
            timer: None,
            next_at: None,
            messages: Default::default(),
            last_step: None,
        };
        (crate::state::Record::new(key, now), exited)
    }

    #[tokio::test]
    async fn an_unsubscribe_or_exit_after_queueing_cancels_the_send() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let now = o.clock.now();
        // Queued, then the prospect unsubscribed (one row) or replied (the other).
        let (record, exited) = exited_lead(now, "email.replied", crate::state::ExitCause::Event);
        o.store
            .commit(
                Effects {
                    records: vec![record],
                    outbox: vec![
                        row("r1", "gone@p.example", now),
                        row("r2", "pat@p.example", now),
                    ],
                    suppress: vec![crate::state::Suppression::new(
                        "gone@p.example",
                        "bounced",
                        now,
                    )],
                    enrollments: vec![exited],
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        deliver(&o).await;
        for id in ["r1", "r2"] {
            let r = o.store.outbox_entry(id).unwrap().unwrap();
            assert_eq!(r.status, OutboxStatus::Cancelled, "{r:?}");
        }
        assert!(!dir.path().join("outbox").exists(), "nothing was written");
    }

    #[tokio::test]
    async fn the_sequences_own_exit_step_lets_its_queued_email_go() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let now = o.clock.now();
        // `exit: moved.on` after the last email: a reason with a dot is not
        // an event, and the step is the sequence's own ending.
        let (record, exited) = exited_lead(now, "moved.on", crate::state::ExitCause::Step);
        o.store
            .commit(
                Effects {
                    records: vec![record],
                    outbox: vec![row("r1", "pat@p.example", now)],
                    enrollments: vec![exited],
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        deliver(&o).await;
        let r = o.store.outbox_entry("r1").unwrap().unwrap();
        assert_eq!(r.status, OutboxStatus::Sent, "{r:?}");
    }

    #[tokio::test]
    async fn a_sent_email_is_written_once_with_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let now = o.clock.now();
        let mut r = row("0000000000000009-x", "pat@p.example", now);
        r.created_by = "welcome".into();
        r.step = None;
        let record = crate::state::Record::new(r.record.clone(), now);
        o.store
            .commit(
                Effects {
                    records: vec![record],
                    outbox: vec![r],
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        deliver(&o).await;
        deliver(&o).await;
        let sent = o.store.outbox_entry("0000000000000009-x").unwrap().unwrap();
        assert_eq!((sent.status, sent.attempts), (OutboxStatus::Sent, 1));
        let eml =
            std::fs::read_to_string(dir.path().join("outbox/0000000000000009-x.eml")).unwrap();
        assert!(
            eml.contains("Message-ID: <0000000000000009-x@us.example>"),
            "{eml}"
        );
        let events = crate::store::EventTable::events_after(o.store.as_ref(), 0, 10).unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "email.sent")
                .count(),
            1
        );
    }

    /// A map in memory whose flushes wait for the test to let them end,
    /// as a slow disk's would, and then succeed or fail as told.
    struct GatedBackend {
        map: MemoryBackend,
        gate: tokio::sync::watch::Receiver<Option<bool>>,
    }

    impl crate::store::Backend for GatedBackend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.map.get(key)
        }
        fn scan(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
            self.map.scan(prefix, after, limit)
        }
        fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
            self.map.count(prefix, limit)
        }
        fn scan_rev(
            &self,
            prefix: &[u8],
            before: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
            self.map.scan_rev(prefix, before, limit)
        }
        fn apply(&self, writes: Vec<crate::store::KvWrite>) -> Result<(), StoreError> {
            self.map.apply(writes)
        }
        fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
            let mut gate = self.gate.clone();
            async move {
                match gate.wait_for(Option::is_some).await.map(|g| *g) {
                    Ok(Some(true)) => Ok(()),
                    _ => Err(StoreError::backend_said("the disk failed".to_owned())),
                }
            }
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
    }

    /// A store whose flushes end when the sender says, and a queued email
    /// to a live lead.
    fn gated(
        dir: &std::path::Path,
    ) -> (
        Outbox<KvStore<GatedBackend>>,
        tokio::sync::watch::Sender<Option<bool>>,
    ) {
        let (open, gate) = tokio::sync::watch::channel(None);
        let backend = GatedBackend {
            map: MemoryBackend::default(),
            gate,
        };
        let o = outbox_over(dir, backend);
        let now = o.clock.now();
        let mut r = row("r1", "pat@p.example", now);
        (r.created_by, r.step) = ("welcome".into(), None);
        let record = crate::state::Record::new(r.record.clone(), now);
        let queued = Effects {
            records: vec![record],
            outbox: vec![r],
            ..Effects::default()
        };
        o.store.commit(queued.into()).unwrap();
        (o, open)
    }

    #[tokio::test]
    async fn a_claimed_row_is_handed_over_only_once_its_sending_mark_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (o, open) = gated(dir.path());
        let w = o.workflows.load_full();
        let channels = Arc::new(Channels::new(&w, &o.data_dir, Default::default()));
        let mut running = InFlight::new();
        // The step returns with its flush still running: the worker goes on.
        step(&o, &w, channels, Vec::new(), BATCH, &mut running).unwrap();
        let r = o.store.outbox_entry("r1").unwrap().unwrap();
        assert_eq!(r.status, OutboxStatus::Sending);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dir.path().join("outbox").exists(), "handed over unflushed");
        assert_eq!(running.len(), 1);
        open.send_replace(Some(true));
        let (row, handed) = running.join_next().await.unwrap().unwrap();
        assert!(matches!(handed, Handed::Sent(_)), "{row:?}");
        assert!(dir.path().join("outbox/r1.eml").exists());
    }

    #[tokio::test]
    async fn a_row_whose_sending_mark_cannot_be_flushed_is_kept_and_not_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (o, open) = gated(dir.path());
        open.send_replace(Some(false));
        let w = o.workflows.load_full();
        let channels = Arc::new(Channels::new(&w, &o.data_dir, Default::default()));
        let mut running = InFlight::new();
        step(&o, &w, channels.clone(), Vec::new(), BATCH, &mut running).unwrap();
        let mut finished = Vec::new();
        while let Some(joined) = running.join_next().await {
            take_finished(joined, &mut running, &mut finished);
        }
        assert!(matches!(finished[..], [(_, Handed::Kept)]));
        step(&o, &w, channels, finished, 0, &mut running).unwrap();
        assert!(
            !dir.path().join("outbox").exists(),
            "nothing was handed over"
        );
        // Left as it was claimed: the next start resends or holds it.
        let r = o.store.outbox_entry("r1").unwrap().unwrap();
        assert_eq!((r.status, r.attempts), (OutboxStatus::Sending, 1));
    }

    #[tokio::test]
    async fn an_interrupted_send_is_resent_or_held() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let now = o.clock.now();
        let mut r = row("r1", "pat@p.example", now);
        r.status = OutboxStatus::Sending;
        o.store
            .commit(
                Effects {
                    outbox: vec![r],
                    ..Effects::default()
                }
                .into(),
            )
            .unwrap();
        recover_interrupted(&o).await.unwrap();
        let back = o.store.outbox_entry("r1").unwrap().unwrap();
        assert_eq!(back.status, OutboxStatus::Pending);
        assert!(o.store.sending_outbox(10).unwrap().is_empty());
    }
}
