//! Send windows: when a calendar is open, read in a zone (the recipient's
//! when known), across weekends, holidays and DST changes.

use crate::config::workflows::{Calendar, QuietHours};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How far ahead to look for an open day; a calendar closed for longer is
/// treated as never opening (validation refuses calendars with no days).
const HORIZON_DAYS: i64 = 3 * 366;

/// Sends due together are spread over at most this much of the window's
/// start, so a thousand enrollments do not hit the mail server as one burst.
const SPREAD: Duration = Duration::minutes(10);

/// When a send due at `at` may go out: `at` itself when the window is open,
/// else the next opening plus a spread derived from `key` (stable, so a
/// replay picks the same moment). `None` when the calendar never opens.
pub fn send_time(
    calendar: &Calendar,
    zone: Tz,
    at: DateTime<Utc>,
    key: &str,
) -> Option<DateTime<Utc>> {
    let (open, close) = next_window(calendar, zone, at)?;
    if open <= at {
        return Some(at);
    }
    let room = (close - open).min(SPREAD).num_seconds().max(1) as u64;
    Some(open + Duration::seconds((stable_hash(key) % room) as i64))
}

/// When quiet hours that hold at `at` in `zone` end; `None` when `at` is
/// outside them. Hours across midnight (`21:00-08:00`) end the next day.
pub fn quiet_until(quiet: &QuietHours, zone: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&zone).naive_local();
    let time = local.time();
    let (day, inside) = if quiet.start < quiet.end {
        (local.date(), quiet.start <= time && time < quiet.end)
    } else if time >= quiet.start {
        (local.date().succ_opt()?, true)
    } else {
        (local.date(), time < quiet.end)
    };
    inside.then(|| to_utc(zone, day.and_time(quiet.end)))
}

/// The first open interval `[open, close)` that ends after `at`.
pub fn next_window(
    calendar: &Calendar,
    zone: Tz,
    at: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first_day = at.with_timezone(&zone).date_naive();
    (0..HORIZON_DAYS)
        .filter_map(|offset| first_day.checked_add_signed(Duration::days(offset)))
        .filter(|day| is_open_day(calendar, *day))
        .map(|day| day_window(calendar, zone, day))
        .find(|(_, close)| *close > at)
}

fn is_open_day(calendar: &Calendar, day: NaiveDate) -> bool {
    calendar.days.contains(&day.weekday()) && !calendar.holidays.contains(&day)
}

/// The window of one local day, in UTC.
fn day_window(calendar: &Calendar, zone: Tz, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let (start, end) = match &calendar.hours {
        Some(h) => (day.and_time(h.start), day.and_time(h.end)),
        None => (
            day.and_time(NaiveTime::MIN),
            day.succ_opt().unwrap_or(day).and_time(NaiveTime::MIN),
        ),
    };
    (to_utc(zone, start), to_utc(zone, end))
}

/// A local time in UTC. A time that occurs twice (clocks going back) is its
/// first occurrence; a time skipped by clocks going forward is the moment
/// the clocks jump to, as a person in that zone would experience it.
pub fn to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = zone.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc);
    }
    // In a gap: walk forward a minute at a time to its end (gaps are at
    // most a few hours in the tz database).
    (1..=24 * 60)
        .filter_map(|m| {
            zone.from_local_datetime(&(local + Duration::minutes(m)))
                .earliest()
        })
        .next()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local))
}

/// FNV-1a: a hash that is the same in every process (std's is seeded).
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::parse_hours;
    use chrono::Weekday;

    #[test]
    fn quiet_hours_across_midnight_end_the_next_morning_in_the_recipients_zone() {
        let quiet = QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        let zone: Tz = "America/Chicago".parse().unwrap();
        let utc = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        // 22:30 in Chicago (CST, UTC-6): quiet until 08:00 the next day.
        assert_eq!(
            quiet_until(&quiet, zone, utc("2026-03-03T04:30:00Z")),
            Some(utc("2026-03-03T14:00:00Z"))
        );
        // 06:00 in Chicago: quiet until 08:00 the same day.
        assert_eq!(
            quiet_until(&quiet, zone, utc("2026-03-03T12:00:00Z")),
            Some(utc("2026-03-03T14:00:00Z"))
        );
        // Noon: not quiet.
        assert_eq!(quiet_until(&quiet, zone, utc("2026-03-03T18:00:00Z")), None);
        // Quiet hours within one day.
        let lunch = QuietHours {
            start: NaiveTime::from_hms_opt(12, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(13, 0, 0).unwrap(),
        };
        assert_eq!(
            quiet_until(&lunch, Tz::UTC, utc("2026-03-03T12:59:00Z")),
            Some(utc("2026-03-03T13:00:00Z"))
        );
        assert_eq!(
            quiet_until(&lunch, Tz::UTC, utc("2026-03-03T13:00:00Z")),
            None
        );
    }

    fn business(zone: Tz, holidays: &[&str]) -> Calendar {
        Calendar {
            timezone: zone,
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            hours: parse_hours("09:00-17:00").ok(),
            holidays: holidays
                .iter()
                .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .collect(),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("bad time {text}: {e}"))
    }

    fn local(zone: Tz, t: DateTime<Utc>) -> String {
        t.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    #[test]
    fn inside_the_window_sends_at_once() {
        let cal = business(Tz::America__New_York, &[]);
        let at = utc("2026-03-03T15:00:00Z"); // Tue 10:00 EST
        assert_eq!(send_time(&cal, cal.timezone, at, "k"), Some(at));
    }

    #[test]
    fn friday_evening_waits_for_monday_morning() {
        let zone = Tz::America__New_York;
        let cal = business(zone, &[]);
        let (open, _) = next_window(&cal, zone, utc("2026-03-06T23:30:00Z")).unwrap();
        assert_eq!(local(zone, open), "2026-03-09 09:00 EDT");
    }

    #[test]
    fn us_spring_forward_opens_at_local_nine() {
        // 2026-03-08 is the US switch to EDT: Monday 09:00 is 13:00 UTC, not 14:00.
        let zone = Tz::America__New_York;
        let cal = business(zone, &[]);
        let (open, close) = next_window(&cal, zone, utc("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(open, utc("2026-03-09T13:00:00Z"));
        assert_eq!(close, utc("2026-03-09T21:00:00Z"));
    }

    #[test]
    fn eu_fall_back_opens_at_local_nine() {
        // 2026-10-25 ends BST: Monday 09:00 in London is 09:00 UTC again.
        let zone = Tz::Europe__London;
        let cal = business(zone, &[]);
        let before = next_window(&cal, zone, utc("2026-10-23T07:00:00Z")).unwrap();
        assert_eq!(before.0, utc("2026-10-23T08:00:00Z"));
        let after = next_window(&cal, zone, utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(after.0, utc("2026-10-26T09:00:00Z"));
    }

    #[test]
    fn holidays_are_skipped() {
        let zone = Tz::America__New_York;
        let cal = business(zone, &["2026-11-26", "2026-11-27"]);
        let (open, _) = next_window(&cal, zone, utc("2026-11-25T23:00:00Z")).unwrap();
        assert_eq!(local(zone, open), "2026-11-30 09:00 EST");
    }

    #[test]
    fn recipient_zone_decides_the_hour() {
        let cal = business(Tz::America__New_York, &[]);
        let at = utc("2026-03-03T15:00:00Z"); // 15:00 in London: open there too
        assert_eq!(send_time(&cal, Tz::Europe__London, at, "k"), Some(at));
        let late = utc("2026-03-03T18:00:00Z"); // 18:00 London: closed
        let sent = send_time(&cal, Tz::Europe__London, late, "k").unwrap();
        assert_eq!(&local(Tz::Europe__London, sent)[..13], "2026-03-04 09");
    }

    #[test]
    fn sends_due_together_are_spread_but_stay_in_the_first_minutes() {
        let zone = Tz::America__New_York;
        let cal = business(zone, &[]);
        let at = utc("2026-03-07T12:00:00Z");
        let (open, _) = next_window(&cal, zone, at).unwrap();
        let times: std::collections::BTreeSet<_> = (0..50)
            .filter_map(|i| send_time(&cal, zone, at, &format!("lead-{i}")))
            .collect();
        assert!(times.len() > 30, "only {} distinct send times", times.len());
        assert!(times.iter().all(|t| *t >= open && *t < open + SPREAD));
    }

    #[test]
    fn a_calendar_that_never_opens_gives_none() {
        let mut cal = business(Tz::UTC, &[]);
        cal.days.clear();
        assert_eq!(
            send_time(&cal, Tz::UTC, utc("2026-03-03T15:00:00Z"), "k"),
            None
        );
    }

    #[test]
    fn a_local_time_in_the_spring_gap_is_the_jump() {
        let zone = Tz::America__New_York;
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .unwrap();
        assert_eq!(to_utc(zone, gap), utc("2026-03-08T07:00:00Z"));
    }
}
