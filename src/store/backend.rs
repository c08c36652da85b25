//! The ordered key-value interface the tables are written against.

use super::StoreError;
use std::future::Future;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

/// An ordered byte map with atomic batches and an explicit flush.
pub trait Backend: Send + Sync + 'static {
    /// A value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries whose key starts with `prefix` and sorts after `after`
    /// (exclusive), in key order, at most `limit`.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// The same, in reverse key order, starting below `before` (exclusive).
    fn scan_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// How many keys start with `prefix`, counting at most `limit`.
    fn count(&self, prefix: &[u8], limit: usize) -> Result<usize, StoreError>;
    /// Applies writes atomically.
    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError>;
    /// Makes applied writes durable.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Bytes on disk.
    fn size_on_disk(&self) -> u64;
    /// Why the backend can no longer write, once a write failed in a way
    /// only opening it again clears (sled after an I/O error).
    fn write_failure(&self) -> Option<String> {
        None
    }
}

/// The first key after every key that starts with `prefix`, if any.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The exclusive upper bound of a reverse scan of `prefix` below `before`.
pub fn reverse_upper(prefix: &[u8], before: Option<&[u8]>) -> std::ops::Bound<Vec<u8>> {
    match (before, prefix_end(prefix)) {
        (Some(b), _) => std::ops::Bound::Excluded(b.to_vec()),
        (None, Some(end)) => std::ops::Bound::Excluded(end),
        (None, None) => std::ops::Bound::Unbounded,
    }
}

/// The inclusive-or-exclusive start of a forward scan of `prefix` after `after`.
pub fn forward_start(prefix: &[u8], after: Option<&[u8]>) -> std::ops::Bound<Vec<u8>> {
    match after {
        Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_vec()),
        _ => std::ops::Bound::Included(prefix.to_vec()),
    }
}
