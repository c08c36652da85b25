//! Reading inbound mail (SPEC §5 `POST /v1/inbound/email`): a reply to one
//! of our messages, a bounce (delivery status notification), an
//! out-of-office auto-reply, or an unsubscribe by mail.

use super::message::row_id_of;
use crate::state::{BuiltinEvent, Delivery, NewEvent, OutboxEntry};
use crate::store::{OutboxTable, StoreError};
use chrono::{DateTime, Utc};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use serde_json::json;

/// What an inbound message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A person answered one of our messages.
    Reply {
        /// Outbox ids of ours it names (In-Reply-To, then References).
        candidates: Vec<String>,
        /// The sender.
        from: Option<String>,
        /// Its subject.
        subject: Option<String>,
    },
    /// An automatic answer (out of office, vacation): not a reply.
    AutoReply {
        /// Outbox ids it names.
        candidates: Vec<String>,
    },
    /// A delivery failure report.
    Bounce {
        /// Outbox ids found in the report.
        candidates: Vec<String>,
        /// The report's status line, when it has one.
        status: Option<String>,
    },
    /// `mailto:` unsubscribe: the subject carries a token.
    Unsubscribe {
        /// The token.
        token: String,
    },
}

/// Message-ids looked at in a report at most (a huge message cannot make
/// this scan long).
const MAX_CANDIDATES: usize = 20;

/// The `Message-ID` of a raw message (without angle brackets), when it has
/// a printable one: a mail webhook that delivers the same message twice is
/// recognised by it.
pub fn message_id(raw: &[u8]) -> Option<String> {
    let message = MessageParser::default().parse(raw)?;
    let id = message.message_id()?.trim();
    (!id.is_empty() && !id.chars().any(char::is_control)).then(|| id.to_owned())
}

/// The outbox row of ours an inbound message names, if any.
pub fn our_message<S: OutboxTable + ?Sized>(
    store: &S,
    message: &Inbound,
) -> Result<Option<OutboxEntry>, StoreError> {
    let candidates = match message {
        Inbound::Reply { candidates, .. }
        | Inbound::AutoReply { candidates }
        | Inbound::Bounce { candidates, .. } => candidates,
        Inbound::Unsubscribe { .. } => return Ok(None),
    };
    for id in candidates {
        if let Some(row) = store.outbox_entry(id)? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// The event an inbound message raises on the record of our message
/// `row`: one code path for `POST /v1/inbound/email` and mailboxes. Its id
/// comes from the message's own `Message-ID`, so the same message read
/// twice (a webhook's retry, a rescanned mailbox) is one event.
pub fn event_for(
    raw: &[u8],
    message: &Inbound,
    row: &OutboxEntry,
    now: DateTime<Utc>,
) -> Option<NewEvent> {
    let to = match &row.delivery {
        Delivery::Email { to, .. } => to.clone(),
        Delivery::Webhook { .. } | Delivery::Sms { .. } => String::new(),
    };
    let message_id = message_id(raw);
    let (event_type, data) = match message {
        Inbound::Reply { from, subject, .. } => (
            BuiltinEvent::EmailReplied,
            json!({ "email": to, "from": from, "subject": subject, "outbox_id": row.id, "step": row.step,
                    "snippet": snippet(raw), "message_id": message_id }),
        ),
        Inbound::Bounce { status, .. } => (
            BuiltinEvent::EmailBounced,
            json!({ "email": to, "status": status, "outbox_id": row.id, "step": row.step }),
        ),
        // Recorded for reports, never counted as a reply.
        Inbound::AutoReply { .. } => (
            BuiltinEvent::EmailAutoReplied,
            json!({ "email": to, "outbox_id": row.id, "step": row.step }),
        ),
        Inbound::Unsubscribe { .. } => return None,
    };
    let id = message_id.map(|m| format!("{event_type}/<{m}>"));
    Some(NewEvent::raised(
        event_type,
        row.record.clone(),
        data,
        now,
        id,
    ))
}

/// Characters of a reply's new text kept as `event.snippet`.
const SNIPPET_CHARS: usize = 500;

/// The first lines of what the sender wrote: quoted text (`> ...`, from the
/// "On ... wrote:" line or an "Original Message" divider on) and the
/// signature (after `-- `) removed, whitespace collapsed.
pub fn snippet(raw: &[u8]) -> Option<String> {
    let message = MessageParser::default().parse(raw)?;
    let text = message.body_text(0)?;
    let mut kept = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let lower = trimmed.to_ascii_lowercase();
        let quote_starts = (lower.starts_with("on ") && lower.ends_with("wrote:"))
            || lower.starts_with("-----original message")
            || (lower.starts_with("from:") && !kept.is_empty());
        if trimmed == "--" || line == "-- " || quote_starts {
            break;
        }
        if !trimmed.starts_with('>') && !trimmed.is_empty() {
            kept.push(trimmed.to_owned());
        }
    }
    let joined = kept.join(" ");
    let cut: String = joined.chars().take(SNIPPET_CHARS).collect();
    (!cut.is_empty()).then_some(cut)
}

/// Classifies a raw RFC 822 message; `None` when it cannot be parsed.
pub fn classify(raw: &[u8]) -> Option<Inbound> {
    let message = MessageParser::default().parse(raw)?;
    // Every message has a From (RFC 5322 §3.6); without one it is not mail.
    message.from()?;
    let subject = message.subject().map(str::to_owned);
    if let Some(token) = subject
        .as_deref()
        .and_then(|s| s.trim().strip_prefix("unsubscribe "))
    {
        return Some(Inbound::Unsubscribe {
            token: token.trim().to_owned(),
        });
    }
    let mut candidates = ids(message.in_reply_to());
    candidates.extend(ids(message.references()));
    if is_report(&message) {
        // The original's Message-ID sits in an attached copy of it or its headers.
        candidates.extend(ids_in_text(&String::from_utf8_lossy(raw)));
        candidates.dedup();
        let status = String::from_utf8_lossy(raw)
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("status:"))
            .map(|l| l["status:".len()..].trim().to_owned());
        return Some(Inbound::Bounce { candidates, status });
    }
    if is_auto_reply(&message) {
        return Some(Inbound::AutoReply { candidates });
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    Some(Inbound::Reply {
        candidates,
        from,
        subject,
    })
}

fn ids(value: &HeaderValue) -> Vec<String> {
    let list: Vec<String> = match value {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    list.iter()
        .filter_map(|id| row_id_of(id).map(str::to_owned))
        .take(MAX_CANDIDATES)
        .collect()
}

/// `Message-ID:` lines anywhere in the text (an attached original).
fn ids_in_text(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .filter_map(|v| row_id_of(v).map(str::to_owned))
        .take(MAX_CANDIDATES)
        .collect()
}

fn is_report(message: &mail_parser::Message) -> bool {
    let report = message.is_content_type("multipart", "report");
    let daemon = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.starts_with("mailer-daemon@") || a.starts_with("postmaster@")
        });
    report || daemon
}

fn is_auto_reply(message: &mail_parser::Message) -> bool {
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if header("Auto-Submitted").is_some_and(|v| v != "no") {
        return true;
    }
    if header("X-Autoreply").is_some() || header("X-Autorespond").is_some() {
        return true;
    }
    if header("Precedence").is_some_and(|v| matches!(v.as_str(), "auto_reply" | "bulk" | "junk")) {
        return true;
    }
    let subject = message.subject().unwrap_or_default().trim().to_lowercase();
    OUT_OF_OFFICE.iter().any(|p| subject.starts_with(p))
}

/// How out-of-office subjects begin, in the languages prospects most often
/// write (English, German, French, Spanish, Portuguese, Italian, Dutch,
/// Swedish, Danish and Norwegian, Polish), as Outlook, Gmail and Apple Mail
/// write them.
const OUT_OF_OFFICE: &[&str] = &[
    "automatic reply",
    "auto:",
    "out of office",
    "autoreply",
    "auto-reply",
    "automatische antwort",
    "abwesenheitsnotiz",
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "resposta automática",
    "resposta automatica",
    "ausente do escritório",
    "risposta automatica",
    "fuori sede",
    "automatisch antwoord",
    "afwezig",
    "automatiskt svar",
    "automatisk svar",
    "frånvaro",
    "autosvar",
    "automatyczna odpowiedź",
];

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "From: Pat <pat@p.example>\r\nTo: ana@us.example\r\nSubject: Re: Quick question\r\nIn-Reply-To: <0000000000000007-intro@us.example>\r\nReferences: <0000000000000007-intro@us.example>\r\nMessage-ID: <x1@p.example>\r\n\r\nSounds good, call me.\r\n";

    #[test]
    fn a_reply_names_our_message() {
        let Some(Inbound::Reply {
            candidates, from, ..
        }) = classify(REPLY.as_bytes())
        else {
            panic!("not a reply");
        };
        assert_eq!(candidates[0], "0000000000000007-intro");
        assert_eq!(from.as_deref(), Some("pat@p.example"));
    }

    #[test]
    fn an_out_of_office_is_not_a_reply() {
        let ooo = REPLY.replace(
            "Subject: Re: Quick question",
            "Subject: Out of Office: back Monday\r\nAuto-Submitted: auto-replied",
        );
        assert!(matches!(
            classify(ooo.as_bytes()),
            Some(Inbound::AutoReply { .. })
        ));
    }

    #[test]
    fn out_of_office_subjects_are_known_in_several_languages() {
        for subject in [
            "Automatische Antwort: Hallo",
            "Réponse automatique : Bonjour",
            "Respuesta automática: Hola",
            "AUTOMATIC REPLY: hi",
            "Afwezig: terug op maandag",
        ] {
            let raw = format!(
                "From: a@p.example\r\nSubject: {subject}\r\nIn-Reply-To: <0000000000000007-intro@us.example>\r\n\r\nBack Monday.\r\n"
            );
            assert!(
                matches!(classify(raw.as_bytes()), Some(Inbound::AutoReply { .. })),
                "{subject}"
            );
        }
        let raw = "From: a@p.example\r\nSubject: Re: out of scope?\r\n\r\nhi\r\n";
        assert!(matches!(
            classify(raw.as_bytes()),
            Some(Inbound::Reply { .. })
        ));
    }

    #[test]
    fn a_delivery_status_notification_is_a_bounce() {
        let dsn = "From: MAILER-DAEMON@mx.p.example\r\nTo: ana@us.example\r\nSubject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.p.example\r\n\r\nFinal-Recipient: rfc822; gone@p.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: ana@us.example\r\nTo: gone@p.example\r\nMessage-ID: <0000000000000009-intro@us.example>\r\nSubject: Quick question\r\n--b--\r\n";
        let Some(Inbound::Bounce { candidates, status }) = classify(dsn.as_bytes()) else {
            panic!("not a bounce");
        };
        assert!(
            candidates.contains(&"0000000000000009-intro".to_owned()),
            "{candidates:?}"
        );
        assert_eq!(status.as_deref(), Some("5.1.1"));
    }

    #[test]
    fn a_snippet_is_the_new_text_only() {
        let raw = "From: Pat <pat@p.example>\r\nSubject: Re: Hi\r\nMessage-ID: <m@p>\r\n\r\nSounds good,\r\ncall me Tuesday.\r\n\r\n-- \r\nPat Lee, CFO\r\n";
        assert_eq!(
            snippet(raw.as_bytes()).as_deref(),
            Some("Sounds good, call me Tuesday.")
        );
        let quoted = "From: a@p\r\nSubject: Re\r\n\r\nYes please.\r\nOn Mon, 2 Mar 2026 at 09:00, Ana <ana@us.example> wrote:\r\n> Would a call help?\r\n";
        assert_eq!(snippet(quoted.as_bytes()).as_deref(), Some("Yes please."));
        let outlook = "From: a@p\r\nSubject: RE\r\n\r\nNot now.\r\n-----Original Message-----\r\nFrom: Ana\r\n";
        assert_eq!(snippet(outlook.as_bytes()).as_deref(), Some("Not now."));
        assert_eq!(snippet(b"From: a@p\r\n\r\n> only quoted\r\n"), None);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(classify(b""), None);
        assert_eq!(message_id(b""), None);
        assert_eq!(classify(&[0xff, 0xfe, 0x00, 0x13]), None);
    }
}
