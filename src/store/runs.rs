//! Runs as stored. Run history is most of what the engine writes (in the
//! ingest benchmark, 11 runs are 78% of the bytes per event), so a run is
//! kept without its id (the key holds it), with one-letter field names and
//! its time as milliseconds: about 40% smaller than the named form.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{decode_value, encode_value};
use crate::state::{ActionOutcome, RecordKey, Run};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A run's row. Encoding borrows from the run (the engine writes about
/// ten runs an event, and cloning each one to encode it was a tenth of the
/// worker's time); decoding owns.
#[derive(Serialize, Deserialize)]
struct StoredRun<'a> {
    #[serde(rename = "r")]
    rule: Cow<'a, str>,
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
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    condition: Option<Cow<'a, str>>,
    #[serde(rename = "m")]
    matched: bool,
    #[serde(rename = "s", default, skip_serializing_if = "is_empty")]
    saw: Cow<'a, BTreeMap<String, Json>>,
    #[serde(rename = "a", default)]
    actions: Vec<StoredOutcome<'a>>,
    #[serde(rename = "at")]
    at_ms: i64,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct StoredOutcome<'a>(
    Cow<'a, str>,
    Cow<'a, str>,
    #[serde(default)] Option<Cow<'a, str>>,
);

fn is_empty(saw: &BTreeMap<String, Json>) -> bool {
    saw.is_empty()
}

fn text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

/// The value of a run's row.
pub fn encode(run: &Run) -> Result<Vec<u8>, StoreError> {
    encode_value(&StoredRun {
        rule: Cow::Borrowed(&run.rule),
        event_id: Cow::Borrowed(&run.event_id),
        event_type: Cow::Borrowed(&run.event_type),
        kind: Cow::Borrowed(&run.record.kind),
        record: Cow::Borrowed(&run.record.id),
        version: Cow::Borrowed(&run.version),
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
        at_ms: run.at.timestamp_millis(),
        error: text(&run.error),
    })
}

/// A run from its row.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Run, StoreError> {
    let id = key
        .strip_prefix(keys::RUN)
        .and_then(|id| String::from_utf8(id.to_vec()).ok())
        .ok_or_else(|| StoreError::Decode {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "not a run key".to_owned(),
        })?;
    let s: StoredRun = decode_value(key, value)?;
    let owned = |c: Option<Cow<str>>| c.map(Cow::into_owned);
    Ok(Run {
        id,
        rule: s.rule.into_owned(),
        event_id: s.event_id.into_owned(),
        event_type: s.event_type.into_owned(),
        record: RecordKey {
            kind: s.kind.into_owned(),
            id: s.record.into_owned(),
        },
        version: s.version.into_owned(),
        condition: owned(s.condition),
        matched: s.matched,
        saw: s.saw.into_owned(),
        actions: s
            .actions
            .into_iter()
            .map(|StoredOutcome(action, outcome, detail)| ActionOutcome {
                action: action.into_owned(),
                outcome: outcome.into_owned(),
                detail: owned(detail),
            })
            .collect(),
        at: DateTime::from_timestamp_millis(s.at_ms).unwrap_or(DateTime::UNIX_EPOCH),
        error: owned(s.error),
    })
}

/// Re-encodes a `dealflow-2` store's runs (named, with the id repeated), a
/// page per batch. A row already in the new form is left alone, so a crash
/// part way is finished by the next start.
pub fn migrate_named_values<B: Backend>(backend: &B) -> Result<u64, StoreError> {
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
            let run: Run = decode_value(key, value)?;
            writes.push(KvWrite::Put(key.clone(), encode(&run)?));
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

    fn run(n: u64) -> Run {
        Run {
            id: format!("{n:016}-00"),
            rule: "inbound-lead-to-sdr".into(),
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

    #[test]
    fn a_run_round_trips_in_well_under_its_named_size() {
        let r = run(7);
        let stored = encode(&r).unwrap();
        assert_eq!(decode(&keys::run(&r.id), &stored).unwrap(), r);
        let named = encode_value(&r).unwrap().len();
        assert!(stored.len() * 10 < named * 7, "{} vs {named}", stored.len());
    }

    #[test]
    fn a_broken_row_is_an_error_not_a_panic() {
        let value = encode(&run(1)).unwrap();
        assert!(decode(b"xx\0anything", &value).is_err(), "not a run key");
        assert!(decode(&keys::run("r1"), b"\xff\x00garbage").is_err());
        assert!(
            decode(&[b'r', b'n', 0, 0xff, 0xfe], &value).is_err(),
            "id not UTF-8"
        );
    }

    #[test]
    fn a_dealflow_2_store_s_runs_are_reencoded_on_open() {
        let backend = MemoryBackend::default();
        let mut writes = vec![KvWrite::Put(
            keys::FORMAT.to_vec(),
            keys::FORMAT_VERSION_2.to_vec(),
        )];
        let runs: Vec<Run> = (1..=5_000).map(run).collect();
        // The first 1,000 as a crash part way through an earlier start left
        // them: already in the new form.
        for (i, r) in runs.iter().enumerate() {
            let value = if i < 1_000 {
                encode(r).unwrap()
            } else {
                encode_value(r).unwrap()
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
