//! Payloads a source could not map, kept until they are replayed.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page};
use super::*;

impl<B: Backend> RejectedPayloadTable for KvStore<B> {
    fn rejected_payloads(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RejectedPayload>, StoreError> {
        filtered_page(
            self,
            &keys::rejected_prefix(source),
            after,
            limit,
            false,
            decode_value,
            |_| true,
        )
    }

    fn rejected_payload(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<RejectedPayload>, StoreError> {
        self.get(&keys::rejected(source, id))
    }

    fn rejected_count(&self, source: &str, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(&keys::rejected_prefix(source), limit)
    }
}

/// Writes kept payloads and deletes replayed ones.
pub(super) fn stage(
    kept: &[RejectedPayload],
    replayed: &[(String, String)],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for payload in kept {
        w.push(KvWrite::Put(
            keys::rejected(&payload.source, &payload.id),
            encode_value(payload)?,
        ));
    }
    for (source, id) in replayed {
        w.push(KvWrite::Delete(keys::rejected(source, id)));
    }
    Ok(())
}
