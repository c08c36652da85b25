//! The score ledger: one key per contribution, under its record and model,
//! ordered by the event's log position and the entry's place in it. The
//! record and model are in the key, so the value holds only the rest.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page};
use super::*;
use crate::state::{RecordKey, ScoreEntry, ScoreNotes};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A ledger entry as stored: written with borrowed text, read as owned.
/// Entries stored before `dealflow-5` also hold their record and model,
/// which reading skips.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredEntry<S> {
    rule: S,
    points: f64,
    at: DateTime<Utc>,
    event_id: S,
    seq: (u64, u32),
}

/// Stages the writes of one event's contributions. A model's entries are
/// made together, so its key prefix is built once for them.
pub(super) fn encode(notes: &ScoreNotes, writes: &mut Vec<KvWrite>) -> Result<(), StoreError> {
    let mut prefix = (None, Vec::new());
    for (position, note) in (0u32..).zip(&notes.entries) {
        if prefix.0 != Some(note.model.as_str()) {
            prefix = (
                Some(note.model.as_str()),
                keys::score_ledger_prefix(&notes.record, &note.model),
            );
        }
        let seq = (notes.seq, position);
        let stored = StoredEntry {
            rule: note.rule.as_str(),
            points: note.points,
            at: notes.at,
            event_id: notes.event_id.as_str(),
            seq,
        };
        writes.push(KvWrite::Put(
            keys::score_entry(&prefix.1, seq),
            encode_value(&stored)?,
        ));
    }
    Ok(())
}

impl StoredEntry<String> {
    /// The entry with the record and model its key names.
    pub(super) fn into_entry(self, record: &RecordKey, model: &str) -> ScoreEntry {
        ScoreEntry {
            record: record.clone(),
            model: model.into(),
            rule: self.rule.into(),
            points: self.points,
            at: self.at,
            event_id: self.event_id,
            seq: self.seq,
        }
    }
}

impl<B: Backend> ScoreLedgerTable for KvStore<B> {
    fn score_ledger(
        &self,
        key: &RecordKey,
        model: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page<ScoreEntry>, StoreError> {
        let page = filtered_page(
            self,
            &keys::score_ledger_prefix(key, model),
            before,
            limit,
            true,
            decode_value,
            |_: &StoredEntry<String>| true,
        )?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|e| e.into_entry(key, model))
                .collect(),
            next: page.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Backend, KvStore, MemoryBackend, ScoreLedgerTable};

    #[test]
    fn an_entry_stored_whole_before_dealflow_5_reads_the_same() {
        let entry = ScoreEntry {
            record: RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            model: "fit".into(),
            rule: "visit".into(),
            points: -2.5,
            at: DateTime::UNIX_EPOCH,
            event_id: "e7".into(),
            seq: (7, 3),
        };
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let backend = store.into_backend();
        let prefix = keys::score_ledger_prefix(&entry.record, &entry.model);
        let key = keys::score_entry(&prefix, entry.seq);
        let value = encode_value(&entry).unwrap();
        backend.apply(vec![KvWrite::Put(key, value)]).unwrap();
        let store = KvStore::open(backend, "memory").unwrap();
        let page = store.score_ledger(&entry.record, "fit", None, 10).unwrap();
        assert_eq!(page.items, [entry]);
    }

    #[test]
    fn a_broken_entry_is_an_error() {
        let record = RecordKey {
            kind: "lead".into(),
            id: "L1".into(),
        };
        let backend = MemoryBackend::default();
        let store = KvStore::open(backend, "memory").unwrap();
        let backend = store.into_backend();
        let key = keys::score_entry(&keys::score_ledger_prefix(&record, "fit"), (1, 0));
        backend
            .apply(vec![KvWrite::Put(key, vec![0x93, 0x01])])
            .unwrap();
        let store = KvStore::open(backend, "memory").unwrap();
        assert!(store.score_ledger(&record, "fit", None, 10).is_err());
    }
}
