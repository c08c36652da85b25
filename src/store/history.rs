//! Stage history as stored: one value per record holding all its visits,
//! times as milliseconds. Reports read every history; one key per record
//! (not per visit) and integer times make that scan about three times
//! cheaper, and the engine reads a record's history with one get.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{decode_value, encode_value};
use crate::state::{RecordKey, StageVisit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One visit as stored. Short field names keep the value small; the API
/// shape is [`StageVisit`].
#[derive(Serialize, Deserialize)]
struct StoredVisit {
    #[serde(rename = "p")]
    pipeline: String,
    #[serde(rename = "s")]
    stage: String,
    #[serde(rename = "e")]
    entered_ms: i64,
    #[serde(rename = "x", default)]
    exited_ms: Option<i64>,
    #[serde(rename = "o", default)]
    owner: Option<String>,
    #[serde(rename = "n", default)]
    stalls: u32,
    #[serde(rename = "m", default)]
    refused_moves: u32,
    #[serde(rename = "r", default)]
    refusals: BTreeMap<String, u32>,
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

impl From<&StageVisit> for StoredVisit {
    fn from(v: &StageVisit) -> Self {
        StoredVisit {
            pipeline: v.pipeline.clone(),
            stage: v.stage.clone(),
            entered_ms: v.entered_at.timestamp_millis(),
            exited_ms: v.exited_at.map(|t| t.timestamp_millis()),
            owner: v.owner.clone(),
            stalls: v.stalls,
            refused_moves: v.refused_moves,
            refusals: v.refusals.clone(),
        }
    }
}

impl From<StoredVisit> for StageVisit {
    fn from(v: StoredVisit) -> Self {
        StageVisit {
            pipeline: v.pipeline,
            stage: v.stage,
            entered_at: from_ms(v.entered_ms),
            exited_at: v.exited_ms.map(from_ms),
            owner: v.owner,
            stalls: v.stalls,
            refused_moves: v.refused_moves,
            refusals: v.refusals,
        }
    }
}

/// Encodes a record's whole history.
pub fn encode(visits: &[StageVisit]) -> Result<Vec<u8>, StoreError> {
    let stored: Vec<StoredVisit> = visits.iter().map(StoredVisit::from).collect();
    encode_value(&stored)
}

/// Decodes a record's whole history.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Vec<StageVisit>, StoreError> {
    let stored: Vec<StoredVisit> = decode_value(key, bytes)?;
    Ok(stored.into_iter().map(StageVisit::from).collect())
}

/// A record's history by visit index, to apply visit writes to in any
/// order (as one key per visit would have taken them).
pub fn by_index(visits: Vec<StageVisit>) -> BTreeMap<u64, StageVisit> {
    (0u64..).zip(visits).collect()
}

/// Moves a `dealflow-2` store's history (one key per visit, named values)
/// to one key per record, a page of visits per batch. Visits are appended
/// to what an earlier batch moved, and their old keys are deleted in the
/// same batch, so a crash part way loses nothing and the next start goes
/// on where this one stopped.
pub fn migrate_from_visit_keys<B: Backend>(backend: &B) -> Result<u64, StoreError> {
    const PAGE: usize = 4_096;
    let mut moved = 0;
    loop {
        let page = backend.scan(keys::STAGE_VISIT, None, PAGE)?;
        if page.is_empty() {
            return Ok(moved);
        }
        let mut writes = Vec::with_capacity(page.len() + PAGE / 4);
        let mut groups: Vec<(RecordKey, Vec<StageVisit>)> = Vec::new();
        for (key, value) in page {
            let record = keys::stage_visit_record(&key).ok_or_else(|| StoreError::Decode {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "not a stage visit key".to_owned(),
            })?;
            let visit: StageVisit = decode_value(&key, &value)?;
            writes.push(KvWrite::Delete(key));
            match groups.last_mut() {
                Some((k, visits)) if *k == record => visits.push(visit),
                _ => groups.push((record, vec![visit])),
            }
        }
        for (record, visits) in groups {
            let key = keys::stage_history(&record);
            let mut all = match backend.get(&key)? {
                Some(v) => decode(&key, &v)?,
                None => Vec::new(),
            };
            all.extend(visits);
            writes.push(KvWrite::Put(key, encode(&all)?));
            moved += 1;
        }
        backend.apply(writes)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvStore, MemoryBackend, StageHistoryTable};

    fn record(id: &str) -> RecordKey {
        RecordKey {
            kind: "deal".into(),
            id: id.into(),
        }
    }

    fn visit(stage: &str, n: i64) -> StageVisit {
        StageVisit {
            pipeline: "b2b".into(),
            stage: stage.into(),
            entered_at: DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(n),
            exited_at: Some(DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(n + 1)),
            owner: Some("ana@x.example".into()),
            ..StageVisit::default()
        }
    }

    #[test]
    fn a_dealflow_2_store_is_moved_to_one_history_per_record() {
        let backend = MemoryBackend::default();
        let mut writes = vec![KvWrite::Put(
            keys::FORMAT.to_vec(),
            keys::FORMAT_VERSION_2.to_vec(),
        )];
        // D2's 5,000 visits span pages of the move.
        let expected: Vec<(RecordKey, Vec<StageVisit>)> = [("D1", 3), ("D2", 5_000), ("D3", 1)]
            .into_iter()
            .map(|(id, n)| (record(id), (0..n).map(|i| visit("qualified", i)).collect()))
            .collect();
        for (key, visits) in &expected {
            for (i, v) in visits.iter().enumerate() {
                writes.push(KvWrite::Put(
                    keys::stage_visit(key, i as u64),
                    encode_value(v).unwrap(),
                ));
            }
        }
        backend.apply(writes).unwrap();
        let store = KvStore::open(backend, "memory").unwrap();
        for (key, visits) in &expected {
            assert_eq!(&store.stage_history(key).unwrap(), visits, "{key}");
        }
        let mut seen = Vec::new();
        store
            .each_stage_history(&mut |k, v| seen.push((k, v.len())))
            .unwrap();
        assert_eq!(
            seen,
            [(record("D1"), 3), (record("D2"), 5_000), (record("D3"), 1)]
        );
        let backend = store.into_backend();
        assert!(backend.scan(keys::STAGE_VISIT, None, 1).unwrap().is_empty());
        assert_eq!(
            backend.get(keys::FORMAT).unwrap().as_deref(),
            Some(keys::FORMAT_VERSION)
        );
    }

    #[test]
    fn a_migration_cut_short_by_a_crash_is_finished_by_the_next_start() {
        // As a crash after the first batch leaves it: the first 4,096 visits
        // moved (new value written, old keys deleted), the rest not, and the
        // format mark still `dealflow-2`.
        let backend = MemoryBackend::default();
        let visits: Vec<StageVisit> = (0..5_000).map(|i| visit("qualified", i)).collect();
        let key = record("D1");
        let mut writes = vec![
            KvWrite::Put(keys::FORMAT.to_vec(), keys::FORMAT_VERSION_2.to_vec()),
            KvWrite::Put(keys::stage_history(&key), encode(&visits[..4_096]).unwrap()),
        ];
        for (i, v) in visits.iter().enumerate().skip(4_096) {
            writes.push(KvWrite::Put(
                keys::stage_visit(&key, i as u64),
                encode_value(v).unwrap(),
            ));
        }
        backend.apply(writes).unwrap();
        let store = KvStore::open(backend, "memory").unwrap();
        assert_eq!(store.stage_history(&key).unwrap(), visits);
    }

    #[test]
    fn visit_writes_land_by_index_in_any_order() {
        let mut h = by_index(vec![visit("a", 0)]);
        h.insert(2, visit("c", 7));
        h.insert(0, visit("a", 5));
        h.insert(1, visit("b", 6));
        let h: Vec<StageVisit> = h.into_values().collect();
        assert_eq!(h, [visit("a", 5), visit("b", 6), visit("c", 7)]);
    }
}
