//! Mailboxes (SPEC §3.11): replies, bounces and auto-replies read from the
//! reps' real inboxes over IMAP, each message handled exactly once.
//!
//! One watcher per configured mailbox: connect ([`imap`]), read every
//! message after the stored position in batches, commit each batch's events
//! with the new position in one flushed commit ([`reading`]), then wait
//! with IDLE (or poll) and read again. A crash between fetch and commit
//! reads the batch again, and its events' ids (from Message-IDs) make the
//! second reading a duplicate. A failure is shown in [`health`] and retried
//! with backoff. A supervisor starts and stops watchers as reloads add,
//! change or remove mailboxes.
//!
//! Owns: the IMAP conversation and mailbox positions. Never: decides what a
//! message means (`delivery::inbound` does, for the API too) or runs rules.

pub mod health;
pub mod imap;
pub mod reading;

use crate::clock::Clock;
use crate::config::Workflows;
use crate::config::workflows::{AfterHandled, Mailbox};
use crate::delivery::unsubscribe::UnsubscribeKey;
use crate::state::MailboxPosition;
use crate::store::Store;
use arc_swap::ArcSwap;
use health::{MailboxHealth, Phase};
use imap::{Connection, ImapError};
use reading::Outcome;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages fetched and committed together.
const BATCH: usize = 100;

/// How often the supervisor looks for added, changed or removed mailboxes.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// The first pause after a failure; it doubles (with jitter) up to
/// [`LONGEST_PAUSE`], and starts again at a successful login.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(300);

fn pauses() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(LONGEST_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What every watcher needs.
pub struct Watchers<S: Store> {
    /// The store.
    pub store: Arc<S>,
    /// The running workflows (mailboxes are in their settings).
    pub workflows: Arc<ArcSwap<Workflows>>,
    /// The clock events are dated by.
    pub clock: Arc<dyn Clock>,
    /// Checks unsubscribe tokens of `unsubscribe TOKEN` mails.
    pub key: UnsubscribeKey,
    /// What each mailbox is doing.
    pub health: Arc<MailboxHealth>,
}

/// Starts the supervisor; it ends, with every watcher, on `cancel`.
pub fn spawn<S: Store>(
    watchers: Watchers<S>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let watchers = Arc::new(watchers);
    tokio::spawn(async move {
        let mut running: BTreeMap<
            String,
            (Mailbox, CancellationToken, tokio::task::JoinHandle<()>),
        > = BTreeMap::new();
        loop {
            let wanted: Vec<Mailbox> = watchers.workflows.load().settings.mailboxes.clone();
            running.retain(|name, (config, stop, _)| {
                let keep = wanted.iter().any(|m| m == config);
                if !keep {
                    tracing::info!(mailbox = %name, "Mailbox removed or changed; its watcher stops.");
                    stop.cancel();
                }
                keep
            });
            for mailbox in &wanted {
                if running.contains_key(&mailbox.name) {
                    continue;
                }
                let stop = cancel.child_token();
                let task = tokio::spawn(watch(watchers.clone(), mailbox.clone(), stop.clone()));
                running.insert(mailbox.name.clone(), (mailbox.clone(), stop, task));
            }
            let names: Vec<String> = wanted.iter().map(|m| m.name.clone()).collect();
            watchers.health.keep_only(&names);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(SUPERVISE_EVERY) => {}
            }
        }
        for (_, (_, stop, task)) in running {
            stop.cancel();
            let _ = task.await;
        }
    })
}

/// Watches one mailbox until `stop`: connects, reads, waits; on a failure,
/// pauses (doubling) and starts again.
async fn watch<S: Store>(watchers: Arc<Watchers<S>>, mailbox: Mailbox, stop: CancellationToken) {
    let url = mailbox.shown();
    let mut pause = pauses();
    while !stop.is_cancelled() {
        watchers
            .health
            .phase(&mailbox.name, &url, Phase::Connecting);
        let result = session(&watchers, &mailbox, &stop, &mut pause).await;
        let Err(error) = result else {
            break;
        };
        let wait = pause.next().unwrap_or(LONGEST_PAUSE);
        let shown = shown_error(&watchers, &mailbox, &error);
        tracing::warn!(mailbox = %mailbox.name, url = %url, error = %shown, retry_in = ?wait, "A mailbox could not be read; trying again.");
        watchers
            .health
            .failed(&mailbox.name, &url, watchers.clock.now(), &shown);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// An error as logs and `/v1/status` show it: the password never, even
/// when a server echoes what it was sent.
fn shown_error<S: Store>(watchers: &Watchers<S>, mailbox: &Mailbox, error: &ImapError) -> String {
    let masked = watchers.workflows.load().secrets.redact(&error.0);
    if mailbox.password.0.len() >= 4 {
        masked.replace(&mailbox.password.0, "***")
    } else {
        masked
    }
}

/// One connection's life: read what is new, wait, again; `Ok` on stop.
async fn session<S: Store>(
    watchers: &Watchers<S>,
    mailbox: &Mailbox,
    stop: &CancellationToken,
    pause: &mut backon::ExponentialBackoff,
) -> Result<(), ImapError> {
    let url = mailbox.shown();
    let mut connection = Connection::open(mailbox).await?;
    *pause = pauses();
    loop {
        watchers.health.phase(&mailbox.name, &url, Phase::Reading);
        catch_up(watchers, mailbox, &mut connection).await?;
        if stop.is_cancelled() {
            connection.close().await;
            return Ok(());
        }
        let waiting = if connection.idle {
            Phase::Idle
        } else {
            Phase::Polling
        };
        watchers.health.phase(&mailbox.name, &url, waiting);
        connection = connection.wait(mailbox.poll, stop.cancelled()).await?;
    }
}

/// Reads every message after the stored position, a batch at a time, each
/// batch committed with the position it reaches.
async fn catch_up<S: Store>(
    watchers: &Watchers<S>,
    mailbox: &Mailbox,
    connection: &mut Connection,
) -> Result<(), ImapError> {
    let store_error =
        |e: crate::store::StoreError| ImapError(format!("storing what was read: {e}"));
    let mut position =
        current_position(watchers, mailbox, connection.uid_validity).map_err(store_error)?;
    let uids = connection.uids_after(position.last_uid).await?;
    for chunk in uids.chunks(BATCH) {
        let fetched = connection.fetch(chunk).await?;
        let now = watchers.clock.now();
        let store = watchers.store.as_ref();
        let mut batch = reading::read(
            store,
            mailbox,
            &watchers.key,
            &fetched,
            position.clone(),
            now,
        )
        .map_err(store_error)?;
        // A message deleted between listing and fetching is passed too.
        let reached = chunk.iter().copied().max().unwrap_or(position.last_uid);
        batch.position.last_uid = batch.position.last_uid.max(reached);
        position = batch.position.clone();
        let handled = batch.handled();
        let outcomes = std::mem::take(&mut batch.outcomes);
        batch.changes.reached([batch.position]);
        store.commit(batch.changes.into()).map_err(store_error)?;
        store.flush().await.map_err(store_error)?;
        record(watchers, mailbox, &outcomes, now);
        after(mailbox, connection, &handled).await;
    }
    Ok(())
}

/// The stored position, or the start of the folder; a changed UIDVALIDITY
/// starts the folder again (Message-IDs already handled stay duplicates).
fn current_position<S: Store>(
    watchers: &Watchers<S>,
    mailbox: &Mailbox,
    uid_validity: u32,
) -> Result<MailboxPosition, crate::store::StoreError> {
    let start = MailboxPosition {
        name: mailbox.name.clone(),
        uid_validity,
        last_uid: 0,
        last_handled_at: None,
    };
    Ok(match watchers.store.mailbox_position(&mailbox.name)? {
        Some(p) if p.uid_validity == uid_validity => p,
        Some(p) => {
            tracing::warn!(mailbox = %mailbox.name, was = p.uid_validity, now = uid_validity, "The folder's UIDVALIDITY changed; reading it again from the start.");
            MailboxPosition {
                last_handled_at: p.last_handled_at,
                ..start
            }
        }
        None => start,
    })
}

fn record<S: Store>(
    watchers: &Watchers<S>,
    mailbox: &Mailbox,
    outcomes: &[(u32, Outcome)],
    now: chrono::DateTime<chrono::Utc>,
) {
    let mut handled = 0;
    let mut skipped = None;
    for (uid, outcome) in outcomes {
        metrics::counter!("dealflow_mailbox_messages_total", "mailbox" => mailbox.name.clone(), "outcome" => outcome.label()).increment(1);
        match outcome {
            Outcome::Raised(event) => {
                handled += 1;
                tracing::info!(mailbox = %mailbox.name, uid, event = %event, "A mailbox message raised an event.");
            }
            Outcome::Skipped(why) => {
                tracing::warn!(mailbox = %mailbox.name, uid, reason = %why, "A mailbox message was skipped.");
                let (count, _) = skipped.get_or_insert((0, String::new()));
                *count += 1;
                skipped = Some((*count, format!("UID {uid}: {why}")));
            }
            Outcome::Ignored => {}
        }
    }
    watchers
        .health
        .read(&mailbox.name, &mailbox.shown(), now, handled, skipped);
}

/// `after:` on the messages that raised events. A failure here loses
/// nothing (their events are stored); it is logged and the watcher goes on.
async fn after(mailbox: &Mailbox, connection: &mut Connection, handled: &[u32]) {
    if handled.is_empty() {
        return;
    }
    let done = match &mailbox.after {
        AfterHandled::Leave => return,
        AfterHandled::MarkSeen => connection.mark_seen(handled).await,
        AfterHandled::Move(folder) => connection.move_to(handled, folder).await,
    };
    if let Err(e) = done {
        tracing::warn!(mailbox = %mailbox.name, error = %e, "Could not flag or move handled messages; their events are stored.");
    }
}
