//! An in-memory backend: for `simulate`, `dealflow test` and unit tests.

use super::StoreError;
use super::backend::{Backend, Entry, KvWrite};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::sync::RwLock;

/// A sorted map in memory; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn range_after(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        super::backend::forward_start(prefix, after),
        Bound::Unbounded,
    )
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .read()
            .range(range_after(prefix, after))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
        Ok(self
            .read()
            .range(range_after(prefix, None))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .count())
    }

    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let map = self.read();
        let upper = super::backend::reverse_upper(prefix, before);
        Ok(map
            .range((Bound::Included(prefix.to_vec()), upper))
            .rev()
            .filter(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for w in writes {
            match w {
                KvWrite::Put(k, v) => {
                    map.insert(k, v);
                }
                KvWrite::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}
