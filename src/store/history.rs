//! Stage history as stored: one value per record holding all its visits,
//! times as milliseconds. Reports read every history; one key per record
//! (not per visit) and integer times make that scan about three times
//! cheaper, and the engine reads a record's history with one get.

use super::backend::{Backend, KvWrite};
use super::kv::{KvStore, decode_value, encode_value};
use super::*;
use crate::state::StageVisit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

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

impl<B: Backend> KvStore<B> {
    /// Folds visit writes into each record's stored history. Only the
    /// engine worker writes history, so reading it here is not racy.
    pub(super) fn stage_history_writes(
        &self,
        visits: &[(RecordKey, u64, StageVisit)],
        writes: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        let mut histories: HashMap<&RecordKey, BTreeMap<u64, StageVisit>> = HashMap::new();
        for (record, index, visit) in visits {
            let history = match histories.entry(record) {
                MapEntry::Occupied(e) => e.into_mut(),
                MapEntry::Vacant(e) => e.insert(by_index(self.stage_history(record)?)),
            };
            history.insert(*index, visit.clone());
        }
        for (record, visits) in histories {
            let visits: Vec<StageVisit> = visits.into_values().collect();
            writes.push(KvWrite::Put(keys::stage_history(record), encode(&visits)?));
        }
        Ok(())
    }
}

impl<B: Backend> StageHistoryTable for KvStore<B> {
    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, StoreError> {
        let key = keys::stage_history(key);
        match self.backend.get(&key)? {
            Some(value) => decode(&key, &value),
            None => Ok(Vec::new()),
        }
    }

    fn each_stage_history(
        &self,
        visit: &mut dyn FnMut(RecordKey, Vec<StageVisit>),
    ) -> Result<(), StoreError> {
        const PAGE: usize = 1_024;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .backend
                .scan(keys::STAGE_HISTORY, after.as_deref(), PAGE)?;
            let done = page.len() < PAGE;
            for (key, value) in &page {
                let record = keys::stage_history_record(key).ok_or_else(|| StoreError::Decode {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "not a stage history key".to_owned(),
                })?;
                visit(record, decode(key, value)?);
            }
            if done {
                return Ok(());
            }
            after = page.into_iter().last().map(|(k, _)| k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn visit_writes_land_by_index_in_any_order() {
        let mut h = by_index(vec![visit("a", 0)]);
        h.insert(2, visit("c", 7));
        h.insert(0, visit("a", 5));
        h.insert(1, visit("b", 6));
        let h: Vec<StageVisit> = h.into_values().collect();
        assert_eq!(h, [visit("a", 5), visit("b", 6), visit("c", 7)]);
    }
}
