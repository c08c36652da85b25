//! Runs as stored. Run history is most of what the engine writes, so it is
//! kept small in keys as well as bytes:
//! - The runs one commit writes for one event share a row, under the first
//!   one's id. sled keeps bookkeeping in memory for every page of about ten
//!   keys, so the daemon's memory grows with keys, not bytes: in the ingest
//!   benchmark an event's 11 runs were 11 of the 16 keys it left behind.
//! - What the runs of a row share (event, record, version, time) is stored
//!   once; each run keeps its id after the shared `SEQ-` prefix, one-letter
//!   field names and no repeated names.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, cursor_of, decode_value, encode_value};
use super::*;
use crate::state::{ActionOutcome, Outcome, RecordKey, Run};
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
    Outcome,
    #[serde(default)] Option<Cow<'a, str>>,
);

impl From<StoredOutcome<'_>> for ActionOutcome {
    fn from(StoredOutcome(action, outcome, detail): StoredOutcome) -> Self {
        ActionOutcome {
            action: action.into_owned(),
            outcome,
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
        return Err(StoreError::Encode {
            reason: "a row of no runs".to_owned(),
        });
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
                    .map(|a| StoredOutcome(Cow::Borrowed(&a.action), a.outcome, text(&a.detail)))
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

impl<B: Backend> RunTable for KvStore<B> {
    fn runs(
        &self,
        filter: &RunFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Run>, StoreError> {
        const CHUNK: usize = 64;
        let mut page = RunPage {
            filter,
            limit,
            items: Vec::new(),
        };
        // One record's rows come from its index, newest first; otherwise
        // every row is read.
        let index = filter.record.as_ref().map(keys::run_by_record_prefix);
        let scanned = index.as_deref().unwrap_or(keys::RUN);
        let mut before = None;
        if let Some(cursor) = after.map(Cursor::parse) {
            // The rest of the row the last page stopped in comes first.
            let key = keys::run(&cursor.row);
            if let Some(value) = self.backend.get(&key)? {
                let mut rest = decode(&key, &value)?;
                rest.truncate(cursor.index);
                if let Some(next) = page.take_row(&cursor.row, rest) {
                    return Ok(page.finish(Some(next)));
                }
            }
            before = Some(keys::join(&[scanned, cursor.row.as_bytes()]));
        }
        loop {
            let chunk = self.backend.scan_rev(scanned, before.as_deref(), CHUNK)?;
            let exhausted = chunk.len() < CHUNK;
            for (key, value) in chunk {
                let row = cursor_of(scanned, &key);
                let runs = match &index {
                    None => decode(&key, &value)?,
                    Some(_) => match self.backend.get(&keys::run(&row))? {
                        Some(stored) => decode(&keys::run(&row), &stored)?,
                        None => Vec::new(),
                    },
                };
                if let Some(next) = page.take_row(&row, runs) {
                    return Ok(page.finish(Some(next)));
                }
                before = Some(key);
            }
            if exhausted {
                return Ok(page.finish(None));
            }
        }
    }

    fn run_rows_in_log_order(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let after = after.map(keys::run);
        self.backend
            .scan(keys::RUN, after.as_deref(), limit)?
            .iter()
            .map(|(key, value)| decode_head(key, value))
            .collect()
    }
}

/// A page of runs being gathered, newest first, a row at a time.
struct RunPage<'a> {
    filter: &'a RunFilter,
    limit: usize,
    items: Vec<Run>,
}

impl RunPage<'_> {
    /// Takes a row's runs, newest first, that pass the filter; answers the
    /// cursor to go on from once the page is full.
    fn take_row(&mut self, row: &str, runs: Vec<Run>) -> Option<Cursor> {
        for (index, run) in runs.into_iter().enumerate().rev() {
            let keep = self.filter.record.as_ref().is_none_or(|k| &run.record == k)
                && self.filter.rule.as_deref().is_none_or(|n| run.rule == n);
            if keep {
                self.items.push(run);
                if self.items.len() >= self.limit {
                    return Some(Cursor {
                        row: row.to_owned(),
                        index,
                    });
                }
            }
        }
        None
    }

    fn finish(self, next: Option<Cursor>) -> Page<Run> {
        Page {
            items: self.items,
            next: next.map(|c| c.to_string()),
        }
    }
}

/// Writes runs as rows, each indexed by its record.
pub(super) fn stage(runs: &[Run], w: &mut Vec<KvWrite>) -> Result<(), StoreError> {
    for row in encode(runs)? {
        let id = String::from_utf8_lossy(&row.key[keys::RUN.len()..]).into_owned();
        w.push(KvWrite::Put(
            keys::run_by_record(&row.record, &id),
            Vec::new(),
        ));
        w.push(KvWrite::Put(row.key, row.value));
    }
    Ok(())
}

impl<B: Backend> KvStore<B> {
    /// Deletes rows of runs past retention, and their index entries.
    pub(super) fn stage_pruned_runs(
        &self,
        pruned: &[String],
        w: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        for id in pruned {
            let key = keys::run(id);
            // Its record names its index entry; pruning is rare and batched.
            if let Some(value) = self.backend.get(&key)? {
                let row = decode_head(&key, &value)?;
                w.push(KvWrite::Delete(keys::run_by_record(&row.record, id)));
            }
            w.push(KvWrite::Delete(key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    outcome: Outcome::Ok,
                    detail: Some("seen = true".into()),
                },
                ActionOutcome {
                    action: "task".into(),
                    outcome: Outcome::Failed,
                    detail: None,
                },
            ],
            at: DateTime::from_timestamp_millis(1_772_456_400_123).unwrap(),
            error: None,
        }
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
}
