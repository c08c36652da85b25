//! Small value syntaxes of the workflow language: durations, times of day,
//! hour ranges, weekdays, dates and rate limits.
//!
//! Each parser returns a sentence for the user on failure; callers attach the
//! position. Written by hand because the accepted forms are exactly the ones
//! SPEC §3 lists (`humantime` also accepts months and years, which have no
//! fixed length and would surprise users of `wait:`).

use chrono::{NaiveDate, NaiveTime, Weekday};
use std::time::Duration;

/// Parses `30s`, `15m`, `4h`, `3d`, `2w`, or a sum such as `1d12h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "write a number followed by s, m, h, d or w, e.g. 30s, 15m, 4h, 3d, 2w";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit: u64 = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(format!("invalid duration \"{text}\"; {hint}")),
        };
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\"; {hint}"))?;
        digits.clear();
        total = amount
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("duration \"{text}\" is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "duration \"{text}\" has no unit; {hint} (seconds are written 30s)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Parses a time of day `HH:MM` (24-hour clock).
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("invalid time \"{text}\"; write HH:MM on a 24-hour clock, e.g. 09:30"))
}

/// A daily window such as `09:00-17:00`; the end is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursRange {
    /// First minute of the window.
    pub start: NaiveTime,
    /// First minute after the window.
    pub end: NaiveTime,
}

/// Parses `HH:MM-HH:MM`; the start must come before the end.
pub fn parse_hours(text: &str) -> Result<HoursRange, String> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| format!("invalid hours \"{text}\"; write HH:MM-HH:MM, e.g. 09:00-17:00"))?;
    let range = HoursRange {
        start: parse_time_of_day(start)?,
        end: parse_time_of_day(end)?,
    };
    if range.start >= range.end {
        return Err(format!(
            "hours \"{text}\" end before they start, so the window never opens"
        ));
    }
    Ok(range)
}

/// Parses `mon`..`sun` (full English names are accepted too).
pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    let day = match text.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => {
            return Err(format!(
                "invalid weekday \"{text}\"; use mon, tue, wed, thu, fri, sat or sun"
            ));
        }
    };
    Ok(day)
}

/// Parses a calendar date `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("invalid date \"{text}\"; write YYYY-MM-DD, e.g. 2026-12-25"))
}

/// Parses an IANA time zone name such as `America/New_York`.
pub fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        format!("unknown time zone \"{text}\"; use an IANA name such as America/New_York or Europe/London")
    })
}

/// A rate limit such as `200/d`: at most `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// How many are allowed in one period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl std::fmt::Display for RateLimit {
    /// As written in settings: `200/d`, `30/m`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            86_400 => "d",
            3_600 => "h",
            60 => "m",
            1 => "s",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses `N/s`, `N/m`, `N/h` or `N/d`.
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let bad = || format!("invalid limit \"{text}\"; write a count per s, m, h or d, e.g. 200/d");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!(
            "limit \"{text}\" allows nothing, so every send would wait forever"
        ));
    }
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(RateLimit {
        count,
        per: Duration::from_secs(secs),
    })
}

/// Parses a crontab line (5 fields, or 6 with seconds first).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let cron = parse_cron_line(text)?;
    check_fires(text, cron)
}

fn parse_cron_line(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !(fields == 5 || fields == 6) {
        return Err(format!(
            "invalid cron line \"{text}\": it has {fields} fields; write 5 (minute hour day month weekday) or 6 with seconds first"
        ));
    }
    check_cron_fields(text)?;
    croner::parser::CronParser::builder()
        .seconds(if fields == 6 {
            croner::parser::Seconds::Required
        } else {
            croner::parser::Seconds::Disallowed
        })
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron line \"{text}\": {e}"))
}

/// One crontab field: its name, its numeric range, and the names it takes.
struct CronField {
    name: &'static str,
    range: (u32, u32),
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const CRON_FIELDS: [CronField; 6] = [
    CronField {
        name: "second",
        range: (0, 59),
        names: &[],
    },
    CronField {
        name: "minute",
        range: (0, 59),
        names: &[],
    },
    CronField {
        name: "hour",
        range: (0, 23),
        names: &[],
    },
    CronField {
        name: "day of month",
        range: (1, 31),
        names: &["l", "w", "lw"],
    },
    CronField {
        name: "month",
        range: (1, 12),
        names: MONTHS,
    },
    CronField {
        name: "weekday",
        range: (0, 7),
        names: WEEKDAYS,
    },
];

/// Checks each field against its place, so a line whose fields do not fit
/// (`0 8 * * mon-fri *` read seconds-first puts `mon-fri` in the month) is
/// refused with the field named, not run at other times than meant.
fn check_cron_fields(text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let places = &CRON_FIELDS[6 - parts.len()..];
    let read_as = if parts.len() == 6 {
        " (6 fields are read with seconds first)"
    } else {
        ""
    };
    for (part, field) in parts.iter().zip(places) {
        check_cron_field(part, field)
            .map_err(|why| format!("invalid cron line \"{text}\": {why}{read_as}"))?;
    }
    Ok(())
}

fn check_cron_field(part: &str, field: &CronField) -> Result<(), String> {
    let lower = part.to_ascii_lowercase();
    for item in lower.split(',') {
        let (values, step) = item.split_once('/').unwrap_or((item, ""));
        if !step.is_empty() && step.parse::<u32>().is_err() {
            return Err(format!("{} step \"{step}\" is not a number", field.name));
        }
        // `#n` (nth weekday) and a trailing `l` (last) are croner's extensions.
        let values = values.split('#').next().unwrap_or(values);
        for value in values
            .split('-')
            .filter(|v| !v.is_empty() && *v != "*" && *v != "?")
        {
            let value = if field.names == WEEKDAYS {
                value.trim_end_matches('l')
            } else {
                value
            };
            match value.parse::<u32>() {
                Ok(n) if n < field.range.0 || n > field.range.1 => {
                    return Err(format!(
                        "{} {n} is out of range {}-{}",
                        field.name, field.range.0, field.range.1
                    ));
                }
                Ok(_) => {}
                Err(_) if value.is_empty() || field.names.contains(&value) => {}
                Err(_) => {
                    let what = if WEEKDAYS.contains(&value) {
                        " (a weekday name)"
                    } else if MONTHS.contains(&value) {
                        " (a month name)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "the {} field cannot hold \"{value}\"{what}",
                        field.name
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_fires(text: &str, cron: croner::Cron) -> Result<croner::Cron, String> {
    // A line such as "0 0 31 2 *" parses but names no real moment; a
    // schedule that can never fire is a mistake, not a quiet no-op. Leap
    // days come every 4 years, so look 8 years ahead.
    let from = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    let fires = from.is_some_and(|from| {
        cron.find_next_occurrence(&from, false)
            .is_ok_and(|t| t < from + chrono::Duration::days(8 * 366))
    });
    if !fires {
        return Err(format!("cron line \"{text}\" never fires (no such date)"));
    }
    Ok(cron)
}

/// Parses a `+4d` offset from a start time (tests, simulate's events file).
pub fn parse_offset(text: &str) -> Result<Duration, String> {
    let rest = text
        .strip_prefix('+')
        .ok_or_else(|| format!("invalid offset \"{text}\"; write + and a duration, e.g. +4d"))?;
    parse_duration(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields_that_do_not_fit_are_named() {
        let cases = [
            (
                "0 8 * * mon-fri *",
                "the month field cannot hold \"mon\" (a weekday name)",
            ),
            ("0 25 * * *", "hour 25 is out of range 0-23"),
            ("61 8 * * *", "minute 61 is out of range 0-59"),
            (
                "0 8 * mon *",
                "the month field cannot hold \"mon\" (a weekday name)",
            ),
            ("0 8 32 * *", "day of month 32 is out of range 1-31"),
            ("0 8 * * 8", "weekday 8 is out of range 0-7"),
            ("0 8 * * 1/x", "weekday step \"x\" is not a number"),
        ];
        for (line, expected) in cases {
            let err = parse_cron(line).err().unwrap_or_default();
            assert!(err.contains(expected), "{line}: {err}");
        }
        for good in [
            "0 8 * * 1-5",
            "0 8 * * mon-fri",
            "30 0 8 * * *",
            "0 9 1 jan,jul *",
            "*/15 * * * *",
            "0 9 * * 5L",
            "0 9 * * mon#2",
            "0 9 L * *",
        ] {
            assert!(
                parse_cron(good).is_ok(),
                "{good}: {:?}",
                parse_cron(good).err()
            );
        }
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(259_200)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
        assert!(
            parse_duration("9999999999999999w")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn hours_must_open() {
        assert!(parse_hours("09:00-17:00").is_ok());
        assert!(
            parse_hours("17:00-09:00")
                .unwrap_err()
                .contains("never opens")
        );
        assert!(parse_hours("9-5").is_err());
    }

    #[test]
    fn weekdays_zones_dates_rates() {
        assert_eq!(parse_weekday("Mon"), Ok(Weekday::Mon));
        assert!(parse_weekday("funday").is_err());
        assert!(parse_timezone("Europe/London").is_ok());
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert_eq!(parse_rate("30/m").map(|r| r.count), Ok(30));
        assert!(parse_rate("0/d").is_err());
        assert!(parse_rate("5/y").is_err());
    }

    #[test]
    fn cron_lines_with_and_without_seconds() {
        assert!(parse_cron("0 8 * * 1-5").is_ok());
        assert!(parse_cron("*/10 0 8 * * 1-5").is_ok());
        assert!(parse_cron("0 8 * *").unwrap_err().contains("4 fields"));
        assert!(parse_cron("0 25 * * *").is_err());
    }
}
