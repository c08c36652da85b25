//! Sending limits (SPEC §3.2 `limits`): per sending mailbox, per recipient
//! domain and per contact across all workflows. An email over a limit is
//! deferred to when the limit allows it, never dropped.
//!
//! Each limit is a sliding window over the sends it counted: `N/d` allows
//! a send when fewer than N went out in the 24 hours before it. The windows
//! outlive reloads, and at start they are filled again from the outbox's
//! sent rows, so neither a restart nor a reload gives a contact one touch
//! more (issue 24). Time is the delivery worker's clock, not the wall's.

use crate::config::values::RateLimit;
use crate::config::workflows::Limits;
use crate::state::{Delivery, OutboxEntry, OutboxStatus, RecordKey};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

pub use crate::state::Audience;

/// An email the limits hold back, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferral {
    /// How long until the limit allows it.
    pub wait: Duration,
    /// Which limit, for the row and the logs.
    pub reason: String,
}

/// Which limit a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Contact,
    Domain,
    Mailbox,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Contact => "per_contact",
            Kind::Domain => "per_domain",
            Kind::Mailbox => "per_mailbox",
        }
    }

    fn limit(self, limits: &Limits) -> Option<RateLimit> {
        match self {
            Kind::Contact => limits.per_contact,
            Kind::Domain => limits.per_domain,
            Kind::Mailbox => limits.per_mailbox,
        }
    }
}

/// The times of the sends one limit counted under one key, oldest first.
type Window = VecDeque<DateTime<Utc>>;

/// The sends each limit counted, by key, kept for the daemon's life.
#[derive(Debug, Default)]
pub struct SendLog {
    sent: Mutex<HashMap<(Kind, String), Window>>,
}

/// One email or text, as the limits see it.
#[derive(Debug, Clone, Copy)]
pub struct Touch<'a> {
    /// The sending mailbox (emails only).
    from: Option<&'a str>,
    /// The address or number.
    to: &'a str,
    audience: Audience,
    /// The record it is about: email and texts to one prospect count as
    /// that contact's touches together.
    record: Option<&'a RecordKey>,
}

impl<'a> Touch<'a> {
    /// An email from `from` to `to`.
    pub fn email(from: &'a str, to: &'a str, audience: Audience) -> Self {
        Touch {
            from: Some(from),
            to,
            audience,
            record: None,
        }
    }

    /// A text to a record's number.
    pub fn text(to: &'a str, record: &'a RecordKey) -> Self {
        Touch {
            from: None,
            to,
            audience: Audience::Prospect,
            record: Some(record),
        }
    }

    /// The same touch, about `record`.
    pub fn about(self, record: &'a RecordKey) -> Self {
        Touch {
            record: Some(record),
            ..self
        }
    }

    /// The keys it counts under: the contact, by address or number and by
    /// record (prospects only: a notice to a rep is not a touch, and must
    /// not wait a day behind the last one); for emails also the
    /// recipient's domain and the sending mailbox. Addresses are
    /// normalized, so one person is one key however it is written
    /// (`Pat <pat@x>`).
    fn keys(&self) -> Vec<(Kind, String)> {
        let to = crate::state::address::normalized(self.to);
        let mut keys = Vec::new();
        if self.audience == Audience::Prospect {
            keys.push((Kind::Contact, to.clone()));
            if let Some(record) = self.record {
                keys.push((Kind::Contact, format!("record {record}")));
            }
        }
        if let Some(from) = self.from {
            let domain = to
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .unwrap_or_default();
            keys.push((Kind::Domain, domain));
            keys.push((Kind::Mailbox, crate::state::address::normalized(from)));
        }
        keys
    }

    /// The touch a row makes, `from` standing in for an email that names
    /// no sender; webhooks touch nobody.
    fn of_row(row: &'a OutboxEntry, from: &'a str) -> Option<Self> {
        match &row.delivery {
            Delivery::Email {
                to,
                from: sender,
                audience,
                ..
            } => Some(
                Touch::email(sender.as_deref().unwrap_or(from), to, *audience).about(&row.record),
            ),
            Delivery::Sms { to, .. } => Some(Touch::text(to, &row.record)),
            Delivery::Webhook { .. } => None,
        }
    }
}

impl SendLog {
    /// Counts one send at `now` under each limit that applies, or says how
    /// long to wait (counting nothing).
    pub fn check(&self, limits: &Limits, touch: Touch, now: DateTime<Utc>) -> Result<(), Deferral> {
        let keys = touch.keys();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, key) in &keys {
            let Some(limit) = kind.limit(limits) else {
                continue;
            };
            let window = sent.entry((*kind, key.clone())).or_default();
            forget_before(window, now, limit.per);
            if window.len() >= limit.count as usize {
                let oldest = window.front().copied().unwrap_or(now);
                let wait = (oldest + span(limit.per) - now)
                    .to_std()
                    .unwrap_or_default();
                return Err(Deferral {
                    wait,
                    reason: format!("deferred by {} limit ({limit}) for {key}", kind.name()),
                });
            }
        }
        for (kind, key) in keys {
            if kind.limit(limits).is_some() {
                sent.entry((kind, key)).or_default().push_back(now);
            }
        }
        Ok(())
    }

    /// The longest period of the limits set, if any is: how far back
    /// [`Self::remember`] needs the outbox.
    pub fn lookback(limits: &Limits) -> Option<Duration> {
        [Kind::Contact, Kind::Domain, Kind::Mailbox]
            .iter()
            .filter_map(|k| k.limit(limits))
            .map(|l| l.per)
            .max()
    }

    /// Counts a send made before this process started, when the row went
    /// out (or was being handed over) within the longest limit's period.
    /// `from` stands in for a row that names no sender.
    pub fn remember(&self, limits: &Limits, row: &OutboxEntry, from: &str, now: DateTime<Utc>) {
        let Some(longest) = Self::lookback(limits) else {
            return;
        };
        let at = row.sent_at.unwrap_or_else(|| row.due_at());
        let counted = matches!(row.status, OutboxStatus::Sent | OutboxStatus::Sending);
        let Some(touch) = Touch::of_row(row, from) else {
            return;
        };
        if !counted || at <= now - span(longest) || at > now {
            return;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        for key in touch.keys() {
            if key.0.limit(limits).is_some() {
                // Rows come in id order, not time order: keep each window sorted.
                let window = sent.entry(key).or_default();
                let at_or_after = window.partition_point(|t| *t <= at);
                window.insert(at_or_after, at);
            }
        }
    }
}

fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn forget_before(window: &mut Window, now: DateTime<Utc>, per: Duration) {
    let start = now - span(per);
    while window.front().is_some_and(|t| *t <= start) {
        window.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RecordKey;

    fn at(hours: i64) -> DateTime<Utc> {
        "2026-03-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(hours)
    }

    /// An email from `from` to a prospect at `to`.
    fn to_prospect<'a>(from: &'a str, to: &'a str) -> Touch<'a> {
        Touch::email(from, to, Audience::Prospect)
    }

    /// Whether an email from us to the prospect `to` may go at hour `hours`
    /// (counting it if so).
    fn allows(log: &SendLog, limits: &Limits, to: &str, hours: i64) -> bool {
        log.check(limits, to_prospect("a@us.example", to), at(hours))
            .is_ok()
    }

    /// One touch a day per contact, nothing else.
    fn one_touch_a_day() -> Limits {
        Limits {
            per_contact: Some(RateLimit {
                count: 1,
                per: Duration::from_secs(86_400),
            }),
            ..Limits::default()
        }
    }

    #[test]
    fn a_contact_limit_defers_the_second_touch_until_the_day_is_over() {
        let (log, limits) = (SendLog::default(), one_touch_a_day());
        assert!(allows(&log, &limits, "pat@p.example", 0));
        let d = log
            .check(
                &limits,
                to_prospect("b@us.example", "Pat <Pat@P.example>"),
                at(20),
            )
            .unwrap_err();
        assert!(d.reason.contains("per_contact limit (1/d)"), "{d:?}");
        assert_eq!(d.wait, Duration::from_secs(4 * 3600));
        assert!(allows(&log, &limits, "sam@p.example", 20));
        assert!(allows(&log, &limits, "pat@p.example", 24));
    }

    #[test]
    fn an_email_and_a_text_to_one_prospect_are_two_touches() {
        let (log, limits) = (SendLog::default(), one_touch_a_day());
        let pat = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let email = Touch::email("a@us.example", "pat@p.example", Audience::Prospect).about(&pat);
        assert!(log.check(&limits, email, at(0)).is_ok());
        let d = log
            .check(&limits, Touch::text("+15551230001", &pat), at(2))
            .unwrap_err();
        assert!(d.reason.contains("record lead/L1"), "{d:?}");
        // Another record's number is another contact.
        let sam = RecordKey {
            kind: "lead".into(),
            id: "L2".into(),
        };
        assert!(
            log.check(&limits, Touch::text("+15551230002", &sam), at(2))
                .is_ok()
        );
        let again = log
            .check(&limits, Touch::text("+15551230002", &sam), at(3))
            .unwrap_err();
        assert!(again.reason.contains("+15551230002"), "{again:?}");
    }

    #[test]
    fn notices_to_the_team_are_not_contact_touches() {
        let (log, limits) = (SendLog::default(), one_touch_a_day());
        for _ in 0..3 {
            assert!(
                log.check(
                    &limits,
                    Touch::email("a@us.example", "rep@us.example", Audience::Team),
                    at(0)
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn no_limits_never_defer() {
        let log = SendLog::default();
        for _ in 0..1000 {
            assert!(
                log.check(
                    &Limits::default(),
                    Touch::email("a@us.example", "pat@p.example", Audience::Prospect),
                    at(0)
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn a_deferred_send_counts_under_no_limit() {
        let limits = Limits {
            per_domain: Some(RateLimit {
                count: 2,
                per: Duration::from_secs(3600),
            }),
            ..one_touch_a_day()
        };
        let log = SendLog::default();
        assert!(allows(&log, &limits, "pat@p.example", 0));
        // Refused by the contact limit: the domain's window is not charged.
        assert!(
            log.check(&limits, to_prospect("a@us.example", "pat@p.example"), at(0))
                .is_err()
        );
        assert!(allows(&log, &limits, "sam@p.example", 0));
        let d = log
            .check(&limits, to_prospect("a@us.example", "kim@p.example"), at(0))
            .unwrap_err();
        assert!(d.reason.contains("per_domain"), "{d:?}");
    }

    #[test]
    fn sends_before_a_restart_still_count() {
        let limits = one_touch_a_day();
        let sent = |to: &str, hours: i64, status| {
            let mut row = OutboxEntry::pending(
                format!("{to}-{hours}"),
                RecordKey {
                    kind: "lead".into(),
                    id: "L1".into(),
                },
                Delivery::Email {
                    to: to.into(),
                    cc: Vec::new(),
                    from: None,
                    subject: "Hi".into(),
                    body: "Hello".into(),
                    format: crate::state::BodyFormat::Markdown,
                    audience: Audience::Prospect,
                    thread: None,
                    zone: None,
                },
                at(hours),
                "rule".into(),
            );
            row.status = status;
            row.sent_at = (status == OutboxStatus::Sent).then(|| at(hours));
            row
        };
        let rows = [
            sent("pat@p.example", 10, OutboxStatus::Sent),
            sent("sam@p.example", -30, OutboxStatus::Sent),
            sent("kim@p.example", 12, OutboxStatus::Pending),
        ];
        let log = SendLog::default();
        for row in &rows {
            log.remember(&limits, row, "sales@us.example", at(20));
        }
        let d = log
            .check(
                &limits,
                to_prospect("a@us.example", "pat@p.example"),
                at(20),
            )
            .unwrap_err();
        assert_eq!(
            d.wait,
            Duration::from_secs(14 * 3600),
            "the day runs from the send before"
        );
        // Sent more than a day ago, or never sent: no touch counted.
        assert!(allows(&log, &limits, "sam@p.example", 20));
        assert!(allows(&log, &limits, "kim@p.example", 20));
    }
}
