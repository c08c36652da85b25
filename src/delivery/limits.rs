//! Sending limits (SPEC §3.2 `limits`): per sending mailbox, per recipient
//! domain and per contact across all workflows. An email over a limit is
//! deferred to when the limit allows it, never dropped.
//!
//! The counts live in memory (governor's GCRA), so a restart forgets them:
//! after a restart a contact can receive one touch more than `per_contact`
//! allows within that period. Said in README.

use crate::config::values::RateLimit;
use crate::config::workflows::Limits;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// The limiters of one settings version.
pub struct SendLimits {
    mailbox: Option<(RateLimit, DefaultKeyedRateLimiter<String>)>,
    domain: Option<(RateLimit, DefaultKeyedRateLimiter<String>)>,
    contact: Option<(RateLimit, DefaultKeyedRateLimiter<String>)>,
}

pub use crate::state::Audience;

/// An email the limits hold back, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferral {
    /// How long until the limit allows it.
    pub wait: Duration,
    /// Which limit, for the row and the logs.
    pub reason: String,
}

fn limiter(limit: &Option<RateLimit>) -> Option<(RateLimit, DefaultKeyedRateLimiter<String>)> {
    let limit = (*limit)?;
    let count = NonZeroU32::new(limit.count)?;
    // N per period: a burst of N, refilled one at a time over the period.
    let quota = Quota::with_period(limit.per / limit.count)?.allow_burst(count);
    Some((limit, RateLimiter::keyed(quota)))
}

impl SendLimits {
    /// Limiters for the configured limits (none unless set).
    pub fn new(limits: &Limits) -> Self {
        SendLimits {
            mailbox: limiter(&limits.per_mailbox),
            domain: limiter(&limits.per_domain),
            contact: limiter(&limits.per_contact),
        }
    }

    /// Takes one send from each limit that applies, or says how long to
    /// wait. `per_contact` counts touches to prospects only: a notice to a
    /// rep is not a touch, and must not wait a day behind the last one.
    pub fn check(&self, from: &str, to: &str, audience: Audience) -> Result<(), Deferral> {
        // One person however the address is written (`Pat <pat@x>`).
        let to = crate::state::address::normalized(to);
        let domain = to
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        let contact = match audience {
            Audience::Prospect => &self.contact,
            Audience::Team => &None,
        };
        let checks = [
            (contact, to.clone(), "per_contact", to.clone()),
            (&self.domain, domain.clone(), "per_domain", domain),
            (
                &self.mailbox,
                from.to_lowercase(),
                "per_mailbox",
                from.to_owned(),
            ),
        ];
        for (limiter, key, name, shown) in checks {
            let Some((limit, limiter)) = limiter else {
                continue;
            };
            if let Err(not_until) = limiter.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Deferral {
                    wait,
                    reason: format!("deferred by {name} limit ({limit}) for {shown}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One touch a day per contact, nothing else.
    fn one_touch_a_day() -> SendLimits {
        SendLimits::new(&Limits {
            per_contact: Some(RateLimit {
                count: 1,
                per: Duration::from_secs(86_400),
            }),
            ..Limits::default()
        })
    }

    #[test]
    fn a_contact_limit_defers_the_second_touch() {
        let l = one_touch_a_day();
        let prospect = Audience::Prospect;
        assert!(l.check("a@us.example", "pat@p.example", prospect).is_ok());
        let d = l
            .check("b@us.example", "Pat@P.example", prospect)
            .unwrap_err();
        assert!(d.reason.contains("per_contact limit (1/d)"), "{d:?}");
        assert!(d.wait > Duration::from_secs(80_000), "{d:?}");
        assert!(l.check("a@us.example", "sam@p.example", prospect).is_ok());
    }

    #[test]
    fn notices_to_the_team_are_not_contact_touches() {
        let l = one_touch_a_day();
        for _ in 0..3 {
            assert!(
                l.check("a@us.example", "rep@us.example", Audience::Team)
                    .is_ok()
            );
        }
    }

    #[test]
    fn no_limits_never_defer() {
        let l = SendLimits::new(&Limits::default());
        for _ in 0..1000 {
            assert!(
                l.check("a@us.example", "pat@p.example", Audience::Prospect)
                    .is_ok()
            );
        }
    }
}
