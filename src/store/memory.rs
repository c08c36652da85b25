//! An in-memory backend: for `simulate`, `dealflow test` and unit tests.

use super::StoreError;
use super::backend::{Backend, Entry, KvWrite, forward_range, reverse_range, take_prefixed};
use std::collections::BTreeMap;
use std::future::Future;
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
        let map = self.read();
        take_prefixed(
            map.range(forward_range(prefix, after)).map(Ok),
            prefix,
            limit,
        )
    }

    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError> {
        Ok(self
            .read()
            .range(forward_range(prefix, None))
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
        let walk = map.range(reverse_range(prefix, before)).rev().map(Ok);
        take_prefixed(walk, prefix, limit)
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
