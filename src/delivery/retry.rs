//! Which failures are worth another try (SPEC §6 "Failed deliveries
//! retry"), and when: exponential backoff with jitter (backon), capped.

use crate::config::workflows::RetryPolicy;
use backon::BackoffBuilder;
use std::time::Duration;

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth retrying: SMTP 4xx, connection problems, HTTP 5xx/408/429.
    Transient {
        /// What happened.
        reason: String,
        /// The receiver's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Never going to work: SMTP 5xx, other HTTP 4xx, a message that cannot
    /// be built, an address refused by the SSRF guard.
    Permanent(String),
    /// The mail server refused the recipient for good (SMTP 5xx whose
    /// enhanced status is about the recipient's address or mailbox): a hard
    /// bounce at hand-over, which also suppresses the address.
    Refused(String),
    /// The mail server refused the sender or the session (a bad login,
    /// MAIL FROM refused, a message too large): nothing to do with the
    /// recipient, and usually fixed on our side, so it is retried like a
    /// transient failure and never suppresses anyone.
    Sender(String),
}

impl Failure {
    /// A transient failure without a receiver's hint.
    pub fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// The same failure with `secrets` masked in its sentence: an HTTP
    /// client's error names the URL, and a webhook URL often carries the
    /// credential (Slack, most CRM hooks).
    pub fn redacted(self, secrets: &crate::config::environment::Secrets) -> Self {
        match self {
            Failure::Transient {
                reason,
                retry_after,
            } => Failure::Transient {
                reason: secrets.redact(&reason),
                retry_after,
            },
            Failure::Permanent(reason) => Failure::Permanent(secrets.redact(&reason)),
            Failure::Refused(reason) => Failure::Refused(secrets.redact(&reason)),
            Failure::Sender(reason) => Failure::Sender(secrets.redact(&reason)),
        }
    }

    /// The sentence recorded on the row.
    pub fn reason(&self) -> &str {
        match self {
            Failure::Transient { reason, .. }
            | Failure::Permanent(reason)
            | Failure::Refused(reason)
            | Failure::Sender(reason) => reason,
        }
    }
}

/// The wait after the `attempt`-th failed try (1-based): `first`, doubling
/// with jitter, never above `max_delay`; a receiver's `Retry-After` wins
/// when it asks for longer.
pub fn delay(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = backon::ExponentialBuilder::new()
        .with_min_delay(policy.first)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay);
    retry_after.map_or(backoff, |r| r.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_cap() {
        let policy = RetryPolicy::default();
        let first = delay(&policy, 1, None);
        assert!(
            first >= Duration::from_secs(2) && first <= Duration::from_secs(4),
            "{first:?}"
        );
        let fifth = delay(&policy, 5, None);
        assert!(fifth >= Duration::from_secs(32), "{fifth:?}");
        assert!(delay(&policy, 40, None) <= policy.max_delay);
        let asked = delay(&policy, 1, Some(Duration::from_secs(120)));
        assert_eq!(asked, Duration::from_secs(120));
    }
}
