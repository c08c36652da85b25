//! The ordered key-value interface the tables are written against.

use super::StoreError;
use std::future::Future;
use std::ops::Bound;

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
    /// Makes applied writes durable, letting a flush another writer starts
    /// within a moment cover them first (for writers nobody waits on).
    fn flush_soon(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.flush()
    }
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

/// The keys a reverse scan of `prefix` below `before` walks: never outside
/// the prefix, whatever `before` is (a cursor past the prefix starts at its
/// end, one before it gives nothing), so every key it yields starts with
/// `prefix` and a backend's range is never inverted.
pub fn reverse_range(prefix: &[u8], before: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let end = prefix_end(prefix);
    let upper = match (before, end) {
        (Some(b), _) if b <= prefix => Bound::Excluded(prefix.to_vec()),
        (Some(b), Some(end)) if b >= end.as_slice() => Bound::Excluded(end),
        (Some(b), _) => Bound::Excluded(b.to_vec()),
        (None, Some(end)) => Bound::Excluded(end),
        (None, None) => Bound::Unbounded,
    };
    (Bound::Included(prefix.to_vec()), upper)
}

/// The keys a forward scan of `prefix` after `after` walks; it ends at the
/// first key without the prefix ([`take_prefixed`]).
pub fn forward_range(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    (start, Bound::Unbounded)
}

/// Up to `limit` entries of an ordered walk, while their keys start with
/// `prefix`: every backend's scans end here, so they page alike.
pub fn take_prefixed<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    items: impl Iterator<Item = Result<(K, V), StoreError>>,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    for item in items {
        if out.len() == limit {
            break;
        }
        let (key, value) = item?;
        if !key.as_ref().starts_with(prefix) {
            break;
        }
        out.push((key.as_ref().to_vec(), value.as_ref().to_vec()));
    }
    Ok(out)
}
