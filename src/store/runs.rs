//! Runs as stored. Run history is most of what the engine writes, so it is
//! kept small in keys as well as bytes:
//! - The runs one commit writes for one event share a row, under the first
//!   one's id. sled keeps bookkeeping in memory for every page of about ten
//!   keys, so the daemon's memory grows with keys, not bytes: in the ingest
//!   benchmark an event's 11 runs were 11 of the 16 keys it left behind.
//! - What the runs of a row share (event, record, version, time) is stored
//!   once; each run keeps its id after the shared `SEQ-` prefix, one-letter
//!   field names and no repeated names.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{decode_value, encode_value};
use crate::state::{ActionOutcome, RecordKey, Run};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A row: runs sharing an event, record, version, time and id prefix.
/// Encoding borrows from the runs (the engine writes about ten an event,
/// and cloning each to encode it was a tenth of the worker's time).
#[derive(Serialize, Deserialize)]
struct StoredRow<'a> {
    #[serde(rename = "e")]
    event_id: Cow<'a, str>,
    #[serde(rename = "t")]
    event_type: Cow<'a, str>,
    #[serde(rename = "k")]
    kind: Cow<'a, str>,
    #[serde(rename = "i")]
    record: Cow<'a, str>,
    #[serde(rename = "v")]
    version: Cow<'a, str>,
    #[serde(rename = "at")]
    at_ms: i64,
    /// The runs in id order, so the row's key is its least id.
    #[serde(rename = "g")]
    runs: Vec<StoredRun<'a>>,
}

/// One run of a row: what is its own.
#[derive(Serialize, Deserialize)]
struct StoredRun<'a> {
    /// The id after the row's prefix.
    #[serde(rename = "n")]
    tail: Cow<'a, str>,
    #[serde(rename = "r")]
    rule: Cow<'a, str>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    condition: Option<Cow<'a, str>>,
    #[serde(rename = "m")]
    matched: bool,
    #[serde(rename = "s", default, skip_serializing_if = "is_empty")]
    saw: Cow<'a, BTreeMap<String, Json>>,
    #[serde(rename = "a", default)]
    actions: Vec<StoredOutcome<'a>>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct StoredOutcome<'a>(
    Cow<'a, str>,
    Cow<'a, str>,
    #[serde(default)] Option<Cow<'a, str>>,
);

impl From<StoredOutcome<'_>> for ActionOutcome {
    fn from(StoredOutcome(action, outcome, detail): StoredOutcome) -> Self {
        ActionOutcome {
            action: action.into_owned(),
            outcome: outcome.into_owned(),
            detail: owned(detail),
        }
    }
}

fn is_empty(saw: &BTreeMap<String, Json>) -> bool {
    saw.is_empty()
}

fn text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(c: Option<Cow<str>>) -> Option<String> {
    c.map(Cow::into_owned)
}

/// The part of a run id its row shares: up to and including the first `-`
/// (the event's sequence number).
fn id_prefix(id: &str) -> &str {
    id.find('-').map_or("", |end| &id[..=end])
}

fn same_row(a: &Run, b: &Run) -> bool {
    id_prefix(&a.id) == id_prefix(&b.id)
        && a.at.timestamp_millis() == b.at.timestamp_millis()
        && a.event_id == b.event_id
        && a.event_type == b.event_type
        && a.record == b.record
        && a.version == b.version
}

/// A row's key and value, and the record its runs are about (for the
/// by-record index).
pub struct EncodedRow {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub record: RecordKey,
}

/// The rows for runs: each run of neighbours that share their event,
/// record, version, time and id prefix becomes one row.
pub fn encode(runs: &[Run]) -> Result<Vec<EncodedRow>, StoreError> {
    runs.chunk_by(same_row).map(encode_row).collect()
}

fn encode_row(runs: &[Run]) -> Result<EncodedRow, StoreError> {
    let mut runs: Vec<&Run> = runs.iter().collect();
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    let Some(first) = runs.first() else {
        return Err(StoreError::Backend("a row of no runs".to_owned()));
    };
    let prefix = id_prefix(&first.id).len();
    let value = encode_value(&StoredRow {
        event_id: Cow::Borrowed(&first.event_id),
        event_type: Cow::Borrowed(&first.event_type),
        kind: Cow::Borrowed(&first.record.kind),
        record: Cow::Borrowed(&first.record.id),
        version: Cow::Borrowed(&first.version),
        at_ms: first.at.timestamp_millis(),
        runs: runs
            .iter()
            .map(|run| StoredRun {
                tail: Cow::Borrowed(run.id.get(prefix..).unwrap_or_default()),
                rule: Cow::Borrowed(&run.rule),
                condition: text(&run.condition),
                matched: run.matched,
                saw: Cow::Borrowed(&run.saw),
                actions: run
                    .actions
                    .iter()
                    .map(|a| {
                        StoredOutcome(
                            Cow::Borrowed(&a.action),
                            Cow::Borrowed(&a.outcome),
                            text(&a.detail),
                        )
                    })
                    .collect(),
                error: text(&run.error),
            })
            .collect(),
    })?;
    Ok(EncodedRow {
        key: keys::run(&first.id),
        value,
        record: first.record.clone(),
    })
}

/// A row's id (its least run id) from its key.
fn row_id(key: &[u8]) -> Result<&str, StoreError> {
    key.strip_prefix(keys::RUN)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or_else(|| StoreError::Decode {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "not a run key".to_owned(),
        })
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The runs of a row, in id order.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Vec<Run>, StoreError> {
    let prefix = id_prefix(row_id(key)?);
    let row: StoredRow = decode_value(key, value)?;
    let record = RecordKey {
        kind: row.kind.into_owned(),
        id: row.record.into_owned(),
    };
    let at = from_millis(row.at_ms);
    Ok(row
        .runs
        .into_iter()
        .map(|run| Run {
            id: format!("{prefix}{}", run.tail),
            rule: run.rule.into_owned(),
            event_id: row.event_id.clone().into_owned(),
            event_type: row.event_type.clone().into_owned(),
            record: record.clone(),
            version: row.version.clone().into_owned(),
            condition: owned(run.condition),
            matched: run.matched,
            saw: run.saw.into_owned(),
            actions: run.actions.into_iter().map(ActionOutcome::from).collect(),
            at,
            error: owned(run.error),
        })
        .collect())
}

/// A row's id, time and size, without its runs (retention).
#[derive(Deserialize)]
struct StoredRowHead {
    #[serde(rename = "k")]
    kind: String,
    #[serde(rename = "i")]
    record: String,
    #[serde(rename = "at")]
    at_ms: i64,
    #[serde(rename = "g")]
    runs: Vec<serde::de::IgnoredAny>,
}

/// A row as retention sees it.
pub fn decode_head(key: &[u8], value: &[u8]) -> Result<super::RunRow, StoreError> {
    let head: StoredRowHead = decode_value(key, value)?;
    Ok(super::RunRow {
        id: row_id(key)?.to_owned(),
        at: from_millis(head.at_ms),
        runs: head.runs.len(),
        record: RecordKey {
            kind: head.kind,
            id: head.record,
        },
    })
}

/// Where a page of runs (newest first) stopped: in the row `row`, at the
/// run at `index`. Written `ROW.INDEX`; a bare run id (a cursor from before
/// rows) means its whole row was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub row: String,
    pub index: usize,
}

impl Cursor {
    pub fn parse(text: &str) -> Cursor {
        match text.rsplit_once('.') {
            Some((row, index)) if let Ok(index) = index.parse() => Cursor {
                row: row.to_owned(),
                index,
            },
            _ => Cursor {
                row: text.to_owned(),
                index: 0,
            },
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.row, self.index)
    }
}

/// The `dealflow-3` row: one run under its own id, every field its own.
#[derive(Deserialize)]
struct SingleRun {
    #[serde(rename = "r")]
    rule: String,
    #[serde(rename = "e")]
    event_id: String,
    #[serde(rename = "t")]
    event_type: String,
    #[serde(rename = "k")]
    kind: String,
    #[serde(rename = "i")]
    record: String,
    #[serde(rename = "v")]
    version: String,
    #[serde(rename = "c", default)]
    condition: Option<String>,
    #[serde(rename = "m")]
    matched: bool,
    #[serde(rename = "s", default)]
    saw: BTreeMap<String, Json>,
    #[serde(rename = "a", default)]
    actions: Vec<StoredOutcome<'static>>,
    #[serde(rename = "at")]
    at_ms: i64,
    #[serde(rename = "x", default)]
    error: Option<String>,
}

/// A run as an older store kept it: `dealflow-3` (one-letter names) or
/// `dealflow-2` (named, with its id).
fn decode_older(key: &[u8], value: &[u8]) -> Result<Run, StoreError> {
    let Ok(s) = decode_value::<SingleRun>(key, value) else {
        return decode_value(key, value);
    };
    Ok(Run {
        id: row_id(key)?.to_owned(),
        rule: s.rule,
        event_id: s.event_id,
        event_type: s.event_type,
        record: RecordKey {
            kind: s.kind,
            id: s.record,
        },
        version: s.version,
        condition: s.condition,
        matched: s.matched,
        saw: s.saw,
        actions: s.actions.into_iter().map(ActionOutcome::from).collect(),
        at: from_millis(s.at_ms),
        error: s.error,
    })
}

/// Rewrites an older store's runs (one key each) as rows of one, a page
/// per batch: the key stays, as a row's key is its least run id. A row
/// already rewritten is left alone, so a crash part way is finished by the
/// next start.
pub fn migrate_to_rows<B: Backend>(backend: &B) -> Result<u64, StoreError> {
    const PAGE: usize = 4_096;
    let mut moved = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = backend.scan(keys::RUN, after.as_deref(), PAGE)?;
        let done = page.len() < PAGE;
        let mut writes = Vec::new();
        for (key, value) in &page {
            if decode(key, value).is_ok() {
                continue;
            }
            let row = encode_row(&[decode_older(key, value)?])?;
            writes.push(KvWrite::Put(key.clone(), row.value));
            moved += 1;
        }
        backend.apply(writes)?;
        if done {
            return Ok(moved);
        }
        after = page.into_iter().last().map(|(k, _)| k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvStore, MemoryBackend, RunFilter, RunTable};

    fn run(n: u64, suffix: &str) -> Run {
        Run {
            id: format!("{n:016}-{suffix}"),
            rule: format!("rule-{suffix}"),
            event_id: format!("form-{n}"),
            event_type: "form.submitted".into(),
            record: RecordKey {
                kind: "lead".into(),
                id: format!("L{n}"),
            },
            version: "9f2c4e1a7b3d5e60".into(),
            condition: Some("lead.score is not defined or lead.score >= 10".into()),
            matched: true,
            saw: [("lead.score".to_owned(), Json::Null)].into(),
            actions: vec![
                ActionOutcome {
                    action: "set".into(),
                    outcome: "ok".into(),
                    detail: Some("seen = true".into()),
                },
                ActionOutcome {
                    action: "task".into(),
                    outcome: "failed".into(),
                    detail: None,
                },
            ],
            at: DateTime::from_timestamp_millis(1_772_456_400_123).unwrap(),
            error: None,
        }
    }

    /// The `dealflow-3` value of a run, as that version wrote it.
    fn single_row(r: &Run) -> Vec<u8> {
        #[derive(Serialize)]
        struct V3<'a> {
            r: &'a str,
            e: &'a str,
            t: &'a str,
            k: &'a str,
            i: &'a str,
            v: &'a str,
            c: &'a Option<String>,
            m: bool,
            s: &'a BTreeMap<String, Json>,
            a: Vec<(&'a str, &'a str, &'a Option<String>)>,
            at: i64,
        }
        encode_value(&V3 {
            r: &r.rule,
            e: &r.event_id,
            t: &r.event_type,
            k: &r.record.kind,
            i: &r.record.id,
            v: &r.version,
            c: &r.condition,
            m: r.matched,
            s: &r.saw,
            a: r.actions
                .iter()
                .map(|a| (a.action.as_str(), a.outcome.as_str(), &a.detail))
                .collect(),
            at: r.at.timestamp_millis(),
        })
        .unwrap()
    }

    #[test]
    fn an_event_s_runs_share_one_row_that_reads_back_in_id_order() {
        let mut late = run(7, "0000-00-delivery");
        late.event_type = "delivery".into();
        let runs = vec![run(7, "seq-intro"), run(7, "0003"), run(8, "0001"), late];
        let rows = encode(&runs).unwrap();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(
            keys,
            [
                keys::run("0000000000000007-0003").as_slice(),
                &keys::run("0000000000000008-0001"),
                &keys::run("0000000000000007-0000-00-delivery"),
            ]
        );
        let (key, value) = (&rows[0].key, &rows[0].value);
        assert_eq!(rows[0].record, runs[0].record);
        assert_eq!(
            decode(key, value).unwrap(),
            [runs[1].clone(), runs[0].clone()]
        );
        let head = decode_head(key, value).unwrap();
        assert_eq!((head.id.as_str(), head.runs), ("0000000000000007-0003", 2));
        assert_eq!(head.record, runs[0].record);
        assert_eq!(head.at, runs[0].at);
    }

    #[test]
    fn a_row_is_well_under_the_size_of_its_runs_stored_one_by_one() {
        let runs: Vec<Run> = (0..11).map(|i| run(7, &format!("{i:04}"))).collect();
        let row = encode(&runs).unwrap().remove(0).value.len();
        let single: usize = runs.iter().map(|r| single_row(r).len()).sum();
        // Each run here has its own condition, saw and actions; only the
        // event, record, version and time are shared.
        assert!(row * 4 < single * 3, "{row} vs {single}");
    }

    #[test]
    fn a_broken_row_is_an_error_not_a_panic() {
        let value = encode(&[run(1, "00")]).unwrap().remove(0).value;
        assert!(decode(b"xx\0anything", &value).is_err(), "not a run key");
        assert!(decode(&keys::run("r1"), b"\xff\x00garbage").is_err());
        assert!(
            decode(&[b'r', b'n', 0, 0xff, 0xfe], &value).is_err(),
            "id not UTF-8"
        );
        assert!(decode_head(&keys::run("r1"), b"\x93").is_err());
    }

    #[test]
    fn a_cursor_reads_back_and_a_bare_run_id_means_its_whole_row() {
        let c = Cursor {
            row: "0000000000000007-seq-v1.2".into(),
            index: 3,
        };
        assert_eq!(Cursor::parse(&c.to_string()), c);
        assert_eq!(
            Cursor::parse("0000000000000007-0003"),
            Cursor {
                row: "0000000000000007-0003".into(),
                index: 0
            }
        );
    }

    #[test]
    fn older_stores_runs_become_rows_on_open() {
        for format in [keys::FORMAT_VERSION_2, keys::FORMAT_VERSION_3] {
            let backend = MemoryBackend::default();
            let mut writes = vec![KvWrite::Put(keys::FORMAT.to_vec(), format.to_vec())];
            let runs: Vec<Run> = (1..=5_000).map(|n| run(n, "0000")).collect();
            // The first 1,000 as a crash part way through an earlier start
            // left them: already rows.
            for (i, r) in runs.iter().enumerate() {
                let value = match i {
                    ..1_000 => encode(std::slice::from_ref(r)).unwrap().remove(0).value,
                    _ if format == keys::FORMAT_VERSION_2 => encode_value(r).unwrap(),
                    _ => single_row(r),
                };
                writes.push(KvWrite::Put(keys::run(&r.id), value));
            }
            backend.apply(writes).unwrap();
            let store = KvStore::open(backend, "memory").unwrap();
            let mut read = store
                .runs(&RunFilter::default(), None, 10_000)
                .unwrap()
                .items;
            read.reverse();
            assert_eq!(read, runs);
        }
    }
}
