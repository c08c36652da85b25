//! What a batch of fetched messages changes: one event per reply, bounce,
//! auto-reply or unsubscribe that names one of our messages (the same code
//! as `POST /v1/inbound/email`), and the mailbox's new position, in one
//! commit. Anything else is left alone; a message that cannot be read is
//! skipped with its reason, and the position moves past it either way, so
//! no message is read twice and none blocks the ones after it.

use super::imap::Fetched;
use crate::config::model::MatchMode;
use crate::config::workflows::Mailbox;
use crate::delivery::inbound::{self, Inbound};
use crate::delivery::unsubscribe::UnsubscribeKey;
use crate::state::{BuiltinEvent, Delivery, MailboxPosition, NewEvent, RecordKey, address};
use crate::store::{IntakeWrites, Store, StoreError, for_each_item};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It raised this built-in event.
    Raised(BuiltinEvent),
    /// It is not about any message of ours: left alone.
    Ignored,
    /// It could not be read: left alone, with why.
    Skipped(String),
}

impl Outcome {
    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Raised(BuiltinEvent::EmailReplied) => "reply",
            Outcome::Raised(BuiltinEvent::EmailBounced) => "bounce",
            Outcome::Raised(BuiltinEvent::EmailAutoReplied) => "auto_reply",
            Outcome::Raised(BuiltinEvent::EmailUnsubscribed) => "unsubscribe",
            Outcome::Raised(_) => "other",
            Outcome::Ignored => "ignored",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

/// A batch read: what to commit, and what became of each message.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events and suppressions, committed with `position` at once.
    pub changes: IntakeWrites,
    /// How far the mailbox is read once this batch is committed.
    pub position: MailboxPosition,
    /// Each message's UID and outcome, in order.
    pub outcomes: Vec<(u32, Outcome)>,
}

impl Batch {
    /// UIDs of the messages that raised an event (what `after:` acts on).
    pub fn handled(&self) -> Vec<u32> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Raised(_)))
            .map(|(uid, _)| *uid)
            .collect()
    }
}

/// Addresses of records in an active enrollment, read once per batch when
/// `match: thread_or_sender` needs them.
#[derive(Debug, Default)]
pub struct Senders {
    by_address: Option<HashMap<String, RecordKey>>,
}

impl Senders {
    fn record_of<S: Store>(
        &mut self,
        store: &S,
        from: &str,
    ) -> Result<Option<RecordKey>, StoreError> {
        if self.by_address.is_none() {
            let mut map = HashMap::new();
            let mut keys = Vec::new();
            for_each_item(
                |after| store.active_enrollments(after, 500),
                |e| keys.push(e.record),
            )?;
            for key in keys {
                let email = store.record(&key)?.and_then(|r| {
                    r.fields
                        .get("email")
                        .and_then(|v| v.as_str())
                        .map(address::normalized)
                });
                if let Some(email) = email {
                    map.entry(email).or_insert(key);
                }
            }
            self.by_address = Some(map);
        }
        Ok(self
            .by_address
            .as_ref()
            .and_then(|m| m.get(&address::normalized(from)).cloned()))
    }
}

/// Reads a batch of messages fetched after `position`.
pub fn read<S: Store>(
    store: &S,
    mailbox: &Mailbox,
    key: &UnsubscribeKey,
    fetched: &[Fetched],
    mut position: MailboxPosition,
    now: DateTime<Utc>,
) -> Result<Batch, StoreError> {
    let mut batch = Batch::default();
    let mut senders = Senders::default();
    for message in fetched {
        let (outcome, changes) = one(store, mailbox, key, message, &position, now, &mut senders)?;
        batch.changes.append(changes);
        position.last_uid = position.last_uid.max(message.uid);
        if matches!(outcome, Outcome::Raised(_)) {
            position.last_handled_at = Some(now);
        }
        batch.outcomes.push((message.uid, outcome));
    }
    batch.position = position;
    Ok(batch)
}

/// What one message changes (nothing, unless it raised an event).
type Read = (Outcome, IntakeWrites);

fn nothing(outcome: Outcome) -> Read {
    (outcome, IntakeWrites::default())
}

fn one<S: Store>(
    store: &S,
    mailbox: &Mailbox,
    key: &UnsubscribeKey,
    message: &Fetched,
    position: &MailboxPosition,
    now: DateTime<Utc>,
    senders: &mut Senders,
) -> Result<Read, StoreError> {
    let Some(classified) = inbound::classify(&message.raw) else {
        let why = "not a readable message (no From header, or not MIME)".to_owned();
        return Ok(nothing(Outcome::Skipped(why)));
    };
    if let Inbound::Unsubscribe { token } = &classified {
        return unsubscribe(store, key, token, now);
    }
    let event = match inbound::our_message(store, &classified)? {
        Some(row) => inbound::event_for(&message.raw, &classified, &row, now),
        None => match (&classified, mailbox.matching) {
            (Inbound::Reply { from: Some(from), subject, .. }, MatchMode::ThreadOrSender) => {
                senders.record_of(store, from)?.map(|record| {
                    let data = json!({ "email": from, "from": from, "subject": subject,
                        "snippet": inbound::snippet(&message.raw), "message_id": inbound::message_id(&message.raw),
                        "matched": "sender" });
                    let replied = BuiltinEvent::EmailReplied;
                    let id = inbound::message_id(&message.raw).map(|m| format!("{replied}/<{m}>"));
                    NewEvent::raised(replied, record, data, now, id)
                })
            }
            _ => None,
        },
    };
    let Some(mut event) = event else {
        return Ok(nothing(Outcome::Ignored));
    };
    // Without a Message-ID, the message's place in the folder names it.
    event.id.get_or_insert_with(|| {
        format!(
            "mailbox/{}/{}/{}",
            mailbox.name, position.uid_validity, message.uid
        )
    });
    let raised = BuiltinEvent::named(&event.event_type).unwrap_or(BuiltinEvent::EmailReplied);
    let mut changes = IntakeWrites::default();
    changes.raise([event]);
    Ok((Outcome::Raised(raised), changes))
}

fn unsubscribe<S: Store>(
    store: &S,
    key: &UnsubscribeKey,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Read, StoreError> {
    let row = match key.verify(token) {
        Some(id) => store.outbox_entry(&id)?,
        None => None,
    };
    let Some(row) = row else {
        let why = "an unsubscribe with a token that is not ours".to_owned();
        return Ok(nothing(Outcome::Skipped(why)));
    };
    let Delivery::Email { to, .. } = &row.delivery else {
        return Ok(nothing(Outcome::Ignored));
    };
    let changes = crate::delivery::unsubscribe::unsubscribed(&row, to, "mail", now);
    Ok((Outcome::Raised(BuiltinEvent::EmailUnsubscribed), changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workflows::{AfterHandled, MailSecurity, SigningSecret};
    use crate::store::{KvStore, MemoryBackend};
    use proptest::prelude::*;

    fn mailbox() -> Mailbox {
        Mailbox {
            name: "sales".into(),
            host: "127.0.0.1".into(),
            port: 143,
            security: MailSecurity::Plain,
            user: "u".into(),
            password: SigningSecret("p".into()),
            folder: "INBOX".into(),
            matching: MatchMode::ThreadOrSender,
            after: AfterHandled::Leave,
            poll: std::time::Duration::from_secs(60),
        }
    }

    fn position() -> MailboxPosition {
        MailboxPosition {
            name: "sales".into(),
            uid_validity: 7,
            last_uid: 3,
            last_handled_at: None,
        }
    }

    #[test]
    fn the_position_moves_past_every_message_read() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let key = UnsubscribeKey::from_bytes(b"k");
        let fetched = [
            Fetched {
                uid: 4,
                raw: b"junk".to_vec(),
            },
            Fetched {
                uid: 9,
                raw: b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n".to_vec(),
            },
        ];
        let batch = read(
            &store,
            &mailbox(),
            &key,
            &fetched,
            position(),
            DateTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(batch.position.last_uid, 9);
        assert!(matches!(batch.outcomes[0].1, Outcome::Skipped(_)));
        assert_eq!(batch.outcomes[1].1, Outcome::Ignored);
        assert!(batch.changes.events().is_empty() && batch.handled().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        /// Whatever a server sends as a message, it is read or skipped,
        /// never a panic, and the position passes it.
        #[test]
        fn any_bytes_are_read_or_skipped(raw in prop::collection::vec(any::<u8>(), 0..400), headers in "(From: [a-z@.]{0,12}\r\n)?(In-Reply-To: <[0-9a-z-]{0,20}@x>\r\n)?(Subject: (unsubscribe )?[ -~]{0,20}\r\n)?") {
            let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
            let key = UnsubscribeKey::from_bytes(b"k");
            let mut message = headers.into_bytes();
            message.extend(b"\r\n");
            message.extend(raw);
            let fetched = [Fetched { uid: 5, raw: message }];
            let batch = read(&store, &mailbox(), &key, &fetched, position(), DateTime::UNIX_EPOCH).unwrap();
            prop_assert_eq!(batch.position.last_uid, 5);
        }
    }
}
