//! What each writer may write. [`Changes`] is the one atomic commit, and
//! only the store fills or reads its fields: a writer builds its own kind
//! of write set, whose methods are the tables it writes, and commits that
//! (`store.commit(writes.into())`). So the compiler, not a review, keeps
//! delivery from writing a record and an API handler from moving the
//! engine's cursor.
//!
//! The writers: the engine worker (the engine's [`Effects`], and the events
//! it sets aside: [`Changes::set_aside`]), the scheduler ([`FiringWrites`]),
//! retention ([`PruneWrites`]), delivery and the outbox's operators
//! ([`DeliveryWrites`]), what comes in from outside: sources, texts,
//! mailboxes, the suppression list ([`IntakeWrites`]), and the forecast
//! snapshot ([`ForecastWrites`]). The appender writes events through
//! [`super::EventTable::append_events`].

use super::{Changes, EventMark, EventRow};
use crate::state::{
    Effects, ForecastSnapshot, MailboxPosition, NewEvent, OutboxEntry, Receipt, RejectedPayload,
    Run, SetAsideEvent, SetAsideTimer, Suppression,
};
use chrono::{DateTime, Utc};

/// A writer's own write set: a type wrapping [`Changes`] whose methods
/// each add items to one table, and which converts into the commit.
macro_rules! write_set {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$method_doc:meta])* $method:ident => $($field:ident).+: $item:ty; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name(Changes);

        impl $name {
            $(
                $(#[$method_doc])*
                pub fn $method(&mut self, items: impl IntoIterator<Item = $item>) -> &mut Self {
                    self.0.$($field).+.extend(items);
                    self
                }
            )*

            /// Whether nothing was written.
            pub fn is_empty(&self) -> bool {
                $( self.0.$($field).+.is_empty() && )* true
            }
        }

        impl From<$name> for Changes {
            fn from(writes: $name) -> Changes {
                writes.0
            }
        }
    };
}

write_set! {
    /// The scheduler: timers fired (their events, and the timers deleted in
    /// the same commit, which is what makes each fire once), schedule slots.
    FiringWrites {
        /// Events of due timers.
        fire => fired: NewEvent;
        /// Timers fired: (due, id).
        timers_done => round.timers_done: (DateTime<Utc>, String);
        /// Timers whose rows do not decode, kept aside (their rows go with
        /// `timers_done`).
        set_aside => set_aside_timers: SetAsideTimer;
        /// Schedule slot events.
        raise => round.events: NewEvent;
        /// Where each schedule has got to.
        counters => round.counters: (String, u64);
    }
}

write_set! {
    /// Retention: what is past `keep_runs` and `keep_events`, and the marks
    /// of the log that date events.
    PruneWrites {
        /// Rows of runs to forget, by row id.
        forget_runs => runs_pruned: String;
        /// Marks of the log to write.
        mark => event_marks: EventMark;
        /// Marks to forget, by time.
        forget_marks => event_marks_pruned: DateTime<Utc>;
        /// Rows of handled events to forget.
        forget_events => event_rows_pruned: EventRow;
    }
}

write_set! {
    /// Delivery and the outbox's operators: rows as they now stand, the
    /// events their hand-over raises, the addresses a hard bounce
    /// suppresses, and the run that records a row given up.
    DeliveryWrites {
        /// Outbox rows as they now stand.
        outbox => round.outbox: OutboxEntry;
        /// Events raised (email.sent, email.bounced, ...).
        raise => round.events: NewEvent;
        /// Addresses never to email again.
        suppress => round.suppress: Suppression;
        /// Runs to record.
        runs => round.runs: Run;
    }
}

write_set! {
    /// What comes in from outside: events from sources, texts and
    /// mailboxes, payloads kept or replayed, receipts of texts, and the
    /// suppression list's changes.
    IntakeWrites {
        /// Events raised by what came in.
        raise => round.events: NewEvent;
        /// Payloads kept because they could not be mapped.
        keep => rejected: RejectedPayload;
        /// Kept payloads replayed: (source, id).
        replayed => replayed: (String, String);
        /// Delivery receipts of texts: (outbox row id, receipt).
        receipts => receipts: (String, Receipt);
        /// Addresses or numbers to suppress.
        suppress => round.suppress: Suppression;
        /// Addresses or numbers to take off the suppression list.
        unsuppress => unsuppress: String;
        /// How far each mailbox was read.
        reached => mailbox_positions: MailboxPosition;
    }
}

impl DeliveryWrites {
    /// Room for `n` more outbox rows: a round's rows are large, and growing
    /// the list row by row copied them over and over.
    pub fn reserve_outbox(&mut self, n: usize) -> &mut Self {
        self.0.round.outbox.reserve(n);
        self
    }
}

impl IntakeWrites {
    /// The events raised so far.
    pub fn events(&self) -> &[NewEvent] {
        &self.0.round.events
    }

    /// The payloads kept so far.
    pub fn kept(&self) -> &[RejectedPayload] {
        &self.0.rejected
    }

    /// The mailbox positions reached so far.
    pub fn positions(&self) -> &[MailboxPosition] {
        &self.0.mailbox_positions
    }

    /// Adds another intake's writes after these.
    pub fn append(&mut self, other: IntakeWrites) {
        self.0.append(other.0);
    }
}

write_set! {
    /// The daily forecast snapshot.
    ForecastWrites {
        /// Snapshots taken.
        snapshots => forecasts: ForecastSnapshot;
    }
}

/// The engine worker's writes: what the engine decided for a round of
/// events ([`Effects`], moved in whole); tests and benchmarks seed a store
/// the same way.
impl From<Effects> for Changes {
    fn from(round: Effects) -> Changes {
        Changes {
            round,
            ..Changes::default()
        }
    }
}

impl Changes {
    /// The commit that sets an event the engine cannot handle aside and
    /// moves the cursor past it (the worker's only other write).
    pub fn set_aside(event: SetAsideEvent) -> Changes {
        Changes {
            round: Effects {
                handled: Some(event.seq),
                ..Effects::default()
            },
            set_aside: vec![event],
            ..Changes::default()
        }
    }
}
