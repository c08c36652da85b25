//! The suppression list, keyed on each address's normalized spelling.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, encode_value, filtered_page};
use super::*;

impl<B: Backend> SuppressionTable for KvStore<B> {
    fn is_suppressed(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self.suppression(email)?.is_some())
    }

    fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError> {
        let key = keys::suppressed(email);
        Ok(self
            .backend
            .get(&key)?
            .map(|value| decode_suppression(&key, &value)))
    }

    fn suppressions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError> {
        filtered_page(
            self,
            keys::SUPPRESSED,
            after,
            limit,
            false,
            |key, value| Ok(decode_suppression(key, value)),
            |_| true,
        )
    }
}

/// Why and when an address was suppressed, as stored with it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SuppressionValue {
    reason: String,
    at: Option<DateTime<Utc>>,
}

/// A stored suppression; one from before reasons were kept has an empty value.
fn decode_suppression(key: &[u8], value: &[u8]) -> Suppression {
    let address = String::from_utf8_lossy(&key[keys::SUPPRESSED.len()..]).into_owned();
    let stored: Option<SuppressionValue> = rmp_serde::from_slice(value).ok();
    let (reason, at) = stored.map_or_else(
        || ("(added before dealflow kept reasons)".to_owned(), None),
        |v| (v.reason, v.at),
    );
    Suppression {
        address,
        reason,
        at,
    }
}

/// Writes suppressions (with why and when) and deletes lifted ones.
pub(super) fn stage(
    suppress: &[Suppression],
    lift: &[String],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for s in suppress {
        let value = SuppressionValue {
            reason: s.reason.clone(),
            at: s.at,
        };
        w.push(KvWrite::Put(
            keys::suppressed(&s.address),
            encode_value(&value)?,
        ));
    }
    for email in lift {
        w.push(KvWrite::Delete(keys::suppressed(email)));
    }
    Ok(())
}
