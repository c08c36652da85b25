//! Key layout. Numbers are big-endian so byte order is numeric order;
//! strings are followed by 0 so a prefix of one name never matches another.
//!
//! A string that other parts follow is written through [`part`], which
//! stuffs any NUL inside it, so no id can end its part early: a record
//! `L9\0x` can never read as `L9` followed by more (issue 26). The last
//! part of a key needs no stuffing (nothing follows it) and is written as
//! it is, as are parts without NUL or 0x01, which the API refuses anyway:
//! every key written before stuffing reads the same after it.

use crate::state::RecordKey;
use chrono::{DateTime, Utc};
use std::borrow::Cow;

/// A key part that other parts follow: NUL becomes 0x01 0x01 and 0x01
/// becomes 0x01 0x02, so the part holds no NUL and the NUL after it ends
/// it unambiguously.
pub fn part(text: &str) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|b| *b <= 1) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 4);
    for b in bytes {
        match b {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            other => out.push(*other),
        }
    }
    Cow::Owned(out)
}

/// The text of a stuffed part, if it is one.
pub fn unpart(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter();
    while let Some(b) = iter.next() {
        match b {
            0 => return None,
            1 => match iter.next()? {
                1 => out.push(0),
                2 => out.push(1),
                _ => return None,
            },
            other => out.push(*other),
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `n` stuffed parts, each ended by NUL, off the front of `rest`:
/// their texts, and what follows them.
pub fn split_parts(rest: &[u8], n: usize) -> Option<(Vec<String>, &[u8])> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = rest;
    for _ in 0..n {
        let end = rest.iter().position(|b| *b == 0)?;
        parts.push(unpart(&rest[..end])?);
        rest = &rest[end + 1..];
    }
    Some((parts, rest))
}

pub const EVENT: &[u8] = b"ev\0";
pub const EVENT_ID: &[u8] = b"ei\0";
pub const CURSOR: &[u8] = b"meta\0cursor";
pub const NEXT_SEQ: &[u8] = b"meta\0next_seq";
pub const FORMAT: &[u8] = b"meta\0format";
pub const RECORD: &[u8] = b"rc\0";
/// Stage history, one key per record.
pub const STAGE_HISTORY: &[u8] = b"sh\0";
pub const TASK: &[u8] = b"tk\0";
pub const OUTBOX: &[u8] = b"ob\0";
/// Outbox rows by record (`/v1/outbox?record=`), in row order.
pub const OUTBOX_BY_RECORD: &[u8] = b"or\0";
/// Outbox rows waiting for delivery, by when they are due.
pub const OUTBOX_DUE: &[u8] = b"oq\0";
/// Outbox rows being handed over right now (found here after a crash).
pub const OUTBOX_SENDING: &[u8] = b"os\0";
pub const TIMER: &[u8] = b"tm\0";
pub const ENROLLMENT: &[u8] = b"en\0";
pub const RUN: &[u8] = b"rn\0";
/// Run rows by record (`/v1/runs?record=`), in row order.
pub const RUN_BY_RECORD: &[u8] = b"rr\0";
pub const SUPPRESSED: &[u8] = b"sp\0";
pub const COUNTER: &[u8] = b"ct\0";
pub const SCORE_LEDGER: &[u8] = b"sl\0";
/// Events the engine set aside, by sequence number.
pub const SET_ASIDE: &[u8] = b"sa\0";
/// Timers whose rows did not decode, by due time and id.
pub const SET_ASIDE_TIMER: &[u8] = b"st\0";
/// Where each IMAP mailbox was read up to, by name.
pub const MAILBOX: &[u8] = b"mb\0";
/// Payloads a source could not map, by source then id.
pub const REJECTED: &[u8] = b"rj\0";
/// The record last texted at each number: who an inbound text is from.
pub const TEXTED: &[u8] = b"tx\0";
/// Delivery receipts of texts, by outbox row id.
pub const RECEIPT: &[u8] = b"rx\0";
/// Marks of the log by time: every event below the mark's sequence number
/// was stored by the mark's time (retention's clock for `keep_events`).
pub const EVENT_MARK: &[u8] = b"em\0";
/// Daily forecast snapshots, by pipeline then day (YYYY-MM-DD sorts by time).
pub const FORECAST: &[u8] = b"fc\0";

/// The store format this build writes; a store with another is refused.
pub const FORMAT_VERSION: &[u8] = b"dealflow-8";
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn event(seq: u64) -> Vec<u8> {
    join(&[EVENT, &seq.to_be_bytes()])
}

pub fn event_mark(at: DateTime<Utc>) -> Vec<u8> {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    join(&[EVENT_MARK, &ms.to_be_bytes()])
}

pub fn event_id(id: &str) -> Vec<u8> {
    join(&[EVENT_ID, id.as_bytes()])
}

pub fn record_prefix(kind: &str) -> Vec<u8> {
    join(&[RECORD, &part(kind), b"\0"])
}

pub fn record(key: &RecordKey) -> Vec<u8> {
    join(&[&record_prefix(&key.kind), key.id.as_bytes()])
}

pub fn stage_history(key: &RecordKey) -> Vec<u8> {
    join(&[STAGE_HISTORY, &part(&key.kind), b"\0", key.id.as_bytes()])
}

/// The record a stage history key belongs to.
pub fn stage_history_record(key: &[u8]) -> Option<RecordKey> {
    let rest = key.strip_prefix(STAGE_HISTORY)?;
    let (mut kind, id) = split_parts(rest, 1)?;
    Some(RecordKey {
        kind: kind.pop()?,
        id: String::from_utf8(id.to_vec()).ok()?,
    })
}

pub fn task(id: &str) -> Vec<u8> {
    join(&[TASK, id.as_bytes()])
}

pub fn outbox(id: &str) -> Vec<u8> {
    join(&[OUTBOX, id.as_bytes()])
}

pub fn texted(phone: &str) -> Vec<u8> {
    join(&[TEXTED, phone.as_bytes()])
}

pub fn receipt(row: &str) -> Vec<u8> {
    join(&[RECEIPT, row.as_bytes()])
}

/// The start of a record's entries in a table or index keyed by record
/// first: the id is followed by NUL, so `L1` never lists `L10`'s.
fn by_record_prefix(index: &[u8], record: &RecordKey) -> Vec<u8> {
    join(&[index, &part(&record.kind), b"\0", &part(&record.id), b"\0"])
}

/// The start of a record's outbox rows in [`OUTBOX_BY_RECORD`].
pub fn outbox_by_record_prefix(record: &RecordKey) -> Vec<u8> {
    by_record_prefix(OUTBOX_BY_RECORD, record)
}

pub fn outbox_by_record(record: &RecordKey, id: &str) -> Vec<u8> {
    join(&[&outbox_by_record_prefix(record), id.as_bytes()])
}

/// The start of a record's run rows in [`RUN_BY_RECORD`].
pub fn run_by_record_prefix(record: &RecordKey) -> Vec<u8> {
    by_record_prefix(RUN_BY_RECORD, record)
}

pub fn run_by_record(record: &RecordKey, row: &str) -> Vec<u8> {
    join(&[&run_by_record_prefix(record), row.as_bytes()])
}

pub fn outbox_due(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let ms = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    join(&[OUTBOX_DUE, &ms.to_be_bytes(), id.as_bytes()])
}

pub fn outbox_sending(id: &str) -> Vec<u8> {
    join(&[OUTBOX_SENDING, id.as_bytes()])
}

/// The due time (ms since the epoch) written in a due-ordered key under
/// `prefix` (the outbox queue, timers).
pub fn due_ms(prefix: &[u8], key: &[u8]) -> Option<u64> {
    read_u64(key.strip_prefix(prefix)?.get(..8)?)
}

/// Timers sort by due time (milliseconds since the epoch; earlier ones clamp to 0).
pub fn timer(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let ms = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    join(&[TIMER, &ms.to_be_bytes(), id.as_bytes()])
}

pub fn enrollment_prefix(key: &RecordKey) -> Vec<u8> {
    by_record_prefix(ENROLLMENT, key)
}

pub fn enrollment(key: &RecordKey, sequence: &str) -> Vec<u8> {
    join(&[&enrollment_prefix(key), sequence.as_bytes()])
}

pub fn score_ledger_prefix(key: &RecordKey, model: &str) -> Vec<u8> {
    join(&[&by_record_prefix(SCORE_LEDGER, key), &part(model), b"\0"])
}

/// Fixed-width hex (not raw big-endian): the suffix doubles as the text
/// paging cursor, and hex of equal width sorts like the numbers.
pub fn score_entry(ledger_prefix: &[u8], seq: (u64, u32)) -> Vec<u8> {
    let position = format!("{:016x}{:08x}", seq.0, seq.1);
    join(&[ledger_prefix, position.as_bytes()])
}

pub fn run(id: &str) -> Vec<u8> {
    join(&[RUN, id.as_bytes()])
}

/// The suppression of an address, keyed on its normalized spelling.
pub fn suppressed(email: &str) -> Vec<u8> {
    join(&[
        SUPPRESSED,
        crate::state::address::normalized(email).as_bytes(),
    ])
}

/// The start of a source's rejected payloads.
pub fn rejected_prefix(source: &str) -> Vec<u8> {
    join(&[REJECTED, &part(source), b"\0"])
}

pub fn rejected(source: &str, id: &str) -> Vec<u8> {
    join(&[&rejected_prefix(source), id.as_bytes()])
}

/// The start of a pipeline's forecast snapshots.
pub fn forecast_prefix(pipeline: &str) -> Vec<u8> {
    join(&[FORECAST, &part(pipeline), b"\0"])
}

pub fn forecast(pipeline: &str, day: chrono::NaiveDate) -> Vec<u8> {
    join(&[
        &forecast_prefix(pipeline),
        day.format("%Y-%m-%d").to_string().as_bytes(),
    ])
}

pub fn mailbox(name: &str) -> Vec<u8> {
    join(&[MAILBOX, name.as_bytes()])
}

pub fn set_aside(seq: u64) -> Vec<u8> {
    join(&[SET_ASIDE, &seq.to_be_bytes()])
}

pub fn set_aside_timer(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let ms = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    join(&[SET_ASIDE_TIMER, &ms.to_be_bytes(), id.as_bytes()])
}

/// A timer key's due time and id (`None` if it is not one): `timer` of
/// them gives the key back.
pub fn timer_parts(key: &[u8]) -> Option<(DateTime<Utc>, String)> {
    let due = DateTime::from_timestamp_millis(i64::try_from(due_ms(TIMER, key)?).ok()?)?;
    let id = String::from_utf8(key.get(TIMER.len() + 8..)?.to_vec()).ok()?;
    Some((due, id))
}

pub fn counter(name: &str) -> Vec<u8> {
    join(&[COUNTER, name.as_bytes()])
}

/// A u64 stored big-endian.
pub fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_key_gives_back_its_due_time_and_id_or_nothing() {
        let due = DateTime::from_timestamp_millis(1_772_000_000_123).unwrap();
        let key = timer(due, "step/L1/nurture");
        let (read_due, id) = timer_parts(&key).unwrap();
        assert_eq!(timer(read_due, &id), key);
        assert_eq!((read_due, id.as_str()), (due, "step/L1/nurture"));
        let mut not_text = key.clone();
        not_text.push(0xff);
        assert_eq!(
            timer_parts(&not_text),
            None,
            "the key could not be made again"
        );
        assert_eq!(timer_parts(&key[..TIMER.len() + 7]), None);
        assert_eq!(timer_parts(b"ob\0x"), None);
    }

    #[test]
    fn parts_without_nul_or_one_are_written_as_they_are() {
        assert!(matches!(part("lead"), Cow::Borrowed(b"lead")));
        assert_eq!(unpart(b"lead").as_deref(), Some("lead"));
    }

    #[test]
    fn stuffed_parts_hold_no_nul_and_read_back() {
        for text in ["L9\0x", "\u{1}", "\0\u{1}\0", "a\u{1}\u{1}b", ""] {
            let written = part(text);
            assert!(!written.contains(&0), "{text:?}");
            assert_eq!(unpart(&written).as_deref(), Some(text));
        }
        assert_eq!(unpart(b"a\x01\x03"), None);
        assert_eq!(unpart(b"a\x01"), None);
        let key = join(&[
            &part("lead\0x"),
            b"\0",
            &part("L\u{1}"),
            b"\0",
            b"row\0tail",
        ]);
        let (parts, rest) = split_parts(&key, 2).unwrap();
        assert_eq!(parts, ["lead\0x", "L\u{1}"]);
        assert_eq!(rest, b"row\0tail");
    }

    proptest::proptest! {
        #[test]
        fn any_text_round_trips_and_two_parts_never_share_a_prefix(
            a in "[\\x00\\x01ab]{0,8}", b in "[\\x00\\x01ab]{0,8}"
        ) {
            proptest::prop_assert_eq!(unpart(&part(&a)), Some(a.clone()));
            let (pa, pb) = (join(&[&part(&a), b"\0"]), join(&[&part(&b), b"\0"]));
            // A part ended by NUL is a prefix of another only if it is it.
            proptest::prop_assert_eq!(pb.starts_with(&pa), a == b);
        }
    }
}
