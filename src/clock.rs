//! The one place dealflow reads the time. Everything else is handed a
//! [`Clock`], so tests and `simulate` can run weeks of workflow at once.

use chrono::{DateTime, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use tokio::sync::Notify;

/// A wait for a moment on some clock.
pub type Sleep<'c> = Pin<Box<dyn Future<Output = ()> + Send + 'c>>;

/// A source of the current time, which loops also sleep on, so a test can
/// move a daemon's time forward instead of waiting for it.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once this clock shows `deadline` or later.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_>;

    /// Resolves once this clock has moved on by `wait`.
    fn sleep(&self, wait: std::time::Duration) -> Sleep<'_> {
        let deadline = chrono::Duration::from_std(wait)
            .ok()
            .and_then(|wait| self.now().checked_add_signed(wait))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(deadline)
    }
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one allowed reading of the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        let wait = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to; what sleeps on it wakes when it
/// is moved past the deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: Notify,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
            moved: Notify::new(),
        }
    }

    /// Moves the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
        self.moved.notify_waiters();
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
        }
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                // Registered before the check, so a move in between is seen.
                let mut moved = std::pin::pin!(self.moved.notified());
                moved.as_mut().enable();
                if self.now() >= deadline {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(chrono::Duration::days(3));
        assert_eq!(clock.now(), start + chrono::Duration::days(3));
    }
}
