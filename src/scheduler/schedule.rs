//! Cron schedules (`on: { schedule: ... }`): which slot is due, and what a
//! slot missed while the daemon was down becomes (`catch_up`).

use crate::config::model::CatchUp;
use crate::config::workflows::Schedule;
use chrono::{DateTime, Duration, Utc};

/// A slot this close behind the clock is on time, not missed: the scheduler
/// wakes a little after the slot, never exactly at it.
const ON_TIME: Duration = Duration::minutes(1);

/// What to do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDue {
    /// Nothing is due.
    Nothing,
    /// Fire for this slot.
    Fire(DateTime<Utc>),
    /// Slots were missed and `catch_up: skip` says to let them go; remember
    /// this one as the last so they are not looked at again.
    Pass(DateTime<Utc>),
}

/// The slot due at `now`, given the last slot handled.
pub fn due(schedule: &Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> SlotDue {
    let Some(next) = next_after(schedule, last) else {
        return SlotDue::Nothing;
    };
    if next > now {
        return SlotDue::Nothing;
    }
    // Several slots may have passed (the daemon was down): one firing at most.
    let latest = latest_at_or_before(schedule, now).unwrap_or(next);
    match schedule.catch_up {
        CatchUp::Latest => SlotDue::Fire(latest),
        CatchUp::Skip if now - latest <= ON_TIME => SlotDue::Fire(latest),
        CatchUp::Skip => SlotDue::Pass(latest),
    }
}

/// The first slot after `after`, in the schedule's zone.
pub fn next_after(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&schedule.timezone);
    schedule
        .cron
        .find_next_occurrence(&local, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn latest_at_or_before(schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&schedule.timezone);
    schedule
        .cron
        .find_previous_occurrence(&local, true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::parse_cron;
    use chrono_tz::Tz;

    fn schedule(line: &str, catch_up: CatchUp) -> Schedule {
        Schedule {
            cron_line: line.to_owned(),
            cron: parse_cron(line).unwrap_or_else(|e| panic!("{e}")),
            timezone: Tz::America__New_York,
            catch_up,
            for_each: None,
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn weekday_eight_am_in_new_york() {
        let s = schedule("0 8 * * 1-5", CatchUp::Latest);
        // Friday 09:00 EST → next is Monday 08:00 EDT (after the March switch).
        let next = next_after(&s, utc("2026-03-06T14:00:00Z"));
        assert_eq!(next, Some(utc("2026-03-09T12:00:00Z")));
    }

    #[test]
    fn nothing_is_due_before_the_next_slot() {
        let s = schedule("0 8 * * 1-5", CatchUp::Latest);
        let last = utc("2026-03-03T13:00:00Z");
        assert_eq!(due(&s, last, utc("2026-03-03T20:00:00Z")), SlotDue::Nothing);
    }

    #[test]
    fn catch_up_latest_fires_once_for_many_missed_slots() {
        let s = schedule("0 8 * * 1-5", CatchUp::Latest);
        let last = utc("2026-03-02T13:00:00Z"); // Mon 08:00 EST
        // Down until Thursday noon: Tue, Wed, Thu slots missed → one firing, Thursday's.
        let now = utc("2026-03-05T17:00:00Z");
        assert_eq!(
            due(&s, last, now),
            SlotDue::Fire(utc("2026-03-05T13:00:00Z"))
        );
    }

    #[test]
    fn catch_up_skip_lets_missed_slots_go_but_fires_on_time_ones() {
        let s = schedule("0 8 * * 1-5", CatchUp::Skip);
        let last = utc("2026-03-02T13:00:00Z");
        let now = utc("2026-03-05T17:00:00Z");
        assert_eq!(
            due(&s, last, now),
            SlotDue::Pass(utc("2026-03-05T13:00:00Z"))
        );
        let on_time = utc("2026-03-03T13:00:20Z");
        assert_eq!(
            due(&s, last, on_time),
            SlotDue::Fire(utc("2026-03-03T13:00:00Z"))
        );
    }

    #[test]
    fn six_fields_run_by_the_second() {
        let s = schedule("*/2 * * * * *", CatchUp::Latest);
        let t = utc("2026-03-03T13:00:01Z");
        assert_eq!(next_after(&s, t), Some(utc("2026-03-03T13:00:02Z")));
    }
}
