//! Key layout. Numbers are big-endian so byte order is numeric order;
//! strings are followed by 0 so a prefix of one name never matches another.

use crate::state::RecordKey;
use chrono::{DateTime, Utc};

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
/// Where each IMAP mailbox was read up to, by name.
pub const MAILBOX: &[u8] = b"mb\0";
/// Payloads a source could not map, by source then id.
pub const REJECTED: &[u8] = b"rj\0";
/// The record last texted at each number: who an inbound text is from.
pub const TEXTED: &[u8] = b"tx\0";
/// Delivery receipts of texts, by outbox row id.
pub const RECEIPT: &[u8] = b"rx\0";
/// Daily forecast snapshots, by pipeline then day (YYYY-MM-DD sorts by time).
pub const FORECAST: &[u8] = b"fc\0";

/// The store format this build writes; a store with another is refused.
pub const FORMAT_VERSION: &[u8] = b"dealflow-7";
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn event(seq: u64) -> Vec<u8> {
    join(&[EVENT, &seq.to_be_bytes()])
}

pub fn event_id(id: &str) -> Vec<u8> {
    join(&[EVENT_ID, id.as_bytes()])
}

pub fn record_prefix(kind: &str) -> Vec<u8> {
    join(&[RECORD, kind.as_bytes(), b"\0"])
}

pub fn record(key: &RecordKey) -> Vec<u8> {
    join(&[&record_prefix(&key.kind), key.id.as_bytes()])
}

pub fn stage_history(key: &RecordKey) -> Vec<u8> {
    join(&[STAGE_HISTORY, key.kind.as_bytes(), b"\0", key.id.as_bytes()])
}

/// The record a stage history key belongs to.
pub fn stage_history_record(key: &[u8]) -> Option<RecordKey> {
    let rest = key.strip_prefix(STAGE_HISTORY)?;
    let split = rest.iter().position(|b| *b == 0)?;
    Some(RecordKey {
        kind: String::from_utf8(rest[..split].to_vec()).ok()?,
        id: String::from_utf8(rest[split + 1..].to_vec()).ok()?,
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
    join(&[
        index,
        record.kind.as_bytes(),
        b"\0",
        record.id.as_bytes(),
        b"\0",
    ])
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

/// The due time (ms) written in an outbox queue key.
pub fn outbox_due_ms(key: &[u8]) -> Option<u64> {
    let bytes = key.strip_prefix(OUTBOX_DUE)?.get(..8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
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
    join(&[
        &by_record_prefix(SCORE_LEDGER, key),
        model.as_bytes(),
        b"\0",
    ])
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

/// The start of a source's rejected payloads (source names are printable
/// words, so NUL ends one unambiguously).
pub fn rejected_prefix(source: &str) -> Vec<u8> {
    join(&[REJECTED, source.as_bytes(), b"\0"])
}

pub fn rejected(source: &str, id: &str) -> Vec<u8> {
    join(&[&rejected_prefix(source), id.as_bytes()])
}

/// The start of a pipeline's forecast snapshots (pipeline names are
/// printable words, so NUL ends one unambiguously).
pub fn forecast_prefix(pipeline: &str) -> Vec<u8> {
    join(&[FORECAST, pipeline.as_bytes(), b"\0"])
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

pub fn counter(name: &str) -> Vec<u8> {
    join(&[COUNTER, name.as_bytes()])
}

/// A u64 stored big-endian.
pub fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}
