//! Records, by kind, read through the cache of the ones written last.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page};
use super::*;

impl<B: Backend> RecordTable for KvStore<B> {
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        match self.records.get(key) {
            Some(record) => Ok(Some(record)),
            None => self.get(&keys::record(key)),
        }
    }

    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, StoreError> {
        filtered_page(
            self,
            &keys::record_prefix(kind),
            after,
            limit,
            false,
            decode_value,
            |_: &Record| true,
        )
    }
}

/// Writes records.
pub(super) fn stage(records: &[Record], w: &mut Vec<KvWrite>) -> Result<(), StoreError> {
    for r in records {
        w.push(KvWrite::Put(keys::record(&r.key), encode_value(r)?));
    }
    Ok(())
}
