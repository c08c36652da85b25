//! Outbox rows, with their delivery indexes kept in step on every write:
//! waiting rows by due time, rows being handed over, and rows by record.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page, indexed_page};
use super::*;

impl<B: Backend> KvStore<B> {
    /// Writes an outbox row and keeps its delivery indexes in step: queued
    /// by due time while waiting, listed while being handed over. Only the
    /// index keys that change are written: the ones the stored version has
    /// (they follow from its status and due time, as `dealflow check`
    /// verifies) and the new version does not are deleted, and the reverse
    /// put; a delete of a key that is not there still costs the backend a
    /// tombstone.
    pub(super) fn stage_outbox(
        &self,
        row: &OutboxEntry,
        writes: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        let wanted = delivery_index_keys(row.status, row.due_at(), &row.id);
        match self.get::<StoredDue>(&keys::outbox(&row.id))? {
            Some(old) => {
                let had = delivery_index_keys(old.status, old.due_at(), &row.id);
                for key in had.iter().filter(|k| !wanted.contains(k)) {
                    writes.push(KvWrite::Delete(key.clone()));
                }
                for key in wanted.into_iter().filter(|k| !had.contains(k)) {
                    writes.push(KvWrite::Put(key, Vec::new()));
                }
            }
            // A row's record never changes: indexed once, when it is new.
            None => {
                writes.push(KvWrite::Put(
                    keys::outbox_by_record(&row.record, &row.id),
                    Vec::new(),
                ));
                if let Delivery::Sms { to, .. } = &row.delivery {
                    writes.push(KvWrite::Put(keys::texted(to), encode_value(&row.record)?));
                }
                for key in wanted {
                    writes.push(KvWrite::Put(key, Vec::new()));
                }
            }
        }
        let value = match &row.receipt {
            // Receipts live under their own key (see `Receipt`).
            Some(_) => encode_value(&OutboxEntry {
                receipt: None,
                ..row.clone()
            })?,
            None => encode_value(row)?,
        };
        writes.push(KvWrite::Put(keys::outbox(&row.id), value));
        Ok(())
    }

    /// A row with its receipt, if one came.
    fn with_receipt(&self, mut row: OutboxEntry) -> Result<OutboxEntry, StoreError> {
        if matches!(row.delivery, Delivery::Sms { .. }) {
            row.receipt = self.get(&keys::receipt(&row.id))?;
        }
        Ok(row)
    }
}

/// The part of a stored row its delivery indexes were keyed by. Every
/// write of a row reads the version it replaces to move those; decoding
/// only these fields skips the delivery (a webhook's body, an email's),
/// which was most of the cost of a delivery worker's commit.
#[derive(serde::Deserialize)]
struct StoredDue {
    status: OutboxStatus,
    created_at: DateTime<Utc>,
    #[serde(default)]
    next_attempt_at: Option<DateTime<Utc>>,
}

impl StoredDue {
    /// As [`OutboxEntry::due_at`].
    fn due_at(&self) -> DateTime<Utc> {
        self.next_attempt_at.unwrap_or(self.created_at)
    }
}

/// Receipts, each under its row's id: written by the hook that receives
/// them, never by the delivery worker, so neither overwrites the other.
pub(super) fn stage_receipts(
    receipts: &[(String, Receipt)],
    writes: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for (row, receipt) in receipts {
        writes.push(KvWrite::Put(keys::receipt(row), encode_value(receipt)?));
    }
    Ok(())
}

/// The delivery index entries a row calls for: queued by due time while
/// waiting, listed while being handed over.
pub(super) fn delivery_index_keys(
    status: OutboxStatus,
    due_at: DateTime<Utc>,
    id: &str,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if status.is_waiting() {
        keys.push(keys::outbox_due(due_at, id));
    }
    if status == OutboxStatus::Sending {
        keys.push(keys::outbox_sending(id));
    }
    keys
}

impl<B: Backend> OutboxTable for KvStore<B> {
    fn outbox(&self, after: Option<&str>, limit: usize) -> Result<Page<OutboxEntry>, StoreError> {
        self.outbox_matching(&OutboxFilter::default(), after, limit)
    }

    fn outbox_matching(
        &self,
        filter: &OutboxFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<OutboxEntry>, StoreError> {
        let keep = |o: &OutboxEntry| filter.status.is_none_or(|s| o.status == s);
        let page = match &filter.record {
            // One record's rows from its index, not a scan of every row.
            Some(record) => indexed_page(
                self,
                &keys::outbox_by_record_prefix(record),
                keys::OUTBOX,
                after,
                limit,
                keep,
            ),
            None => filtered_page(self, keys::OUTBOX, after, limit, false, decode_value, keep),
        }?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|row| self.with_receipt(row))
                .collect::<Result<_, _>>()?,
            next: page.next,
        })
    }

    fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.get(&keys::outbox(id))?
            .map(|row| self.with_receipt(row))
            .transpose()
    }

    fn texted(&self, phone: &str) -> Result<Option<RecordKey>, StoreError> {
        self.get(&keys::texted(phone))
    }

    fn due_outbox(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut rows = Vec::new();
        for (key, _) in self.scan_due(keys::OUTBOX_DUE, now, limit)? {
            let id = String::from_utf8_lossy(&key[keys::OUTBOX_DUE.len() + 8..]).into_owned();
            rows.extend(self.outbox_entry(&id)?);
        }
        Ok(rows)
    }

    fn next_outbox_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.next_due(keys::OUTBOX_DUE)
    }

    fn waiting_outbox(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::OUTBOX_DUE, limit)
    }

    fn sending_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut rows = Vec::new();
        for (key, _) in self.backend.scan(keys::OUTBOX_SENDING, None, limit)? {
            let id = String::from_utf8_lossy(&key[keys::OUTBOX_SENDING.len()..]).into_owned();
            rows.extend(self.outbox_entry(&id)?);
        }
        Ok(rows)
    }
}
