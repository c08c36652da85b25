//! Sequence enrollments, one per record and sequence.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value, filtered_page};
use super::*;

impl<B: Backend> EnrollmentTable for KvStore<B> {
    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, StoreError> {
        Ok(self
            .scan_values(&keys::enrollment_prefix(key), None, usize::MAX)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    fn all_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError> {
        self.enrollments_where(after, limit, |_| true)
    }

    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, StoreError> {
        self.enrollments_where(after, limit, Enrollment::is_active)
    }
}

impl<B: Backend> KvStore<B> {
    /// Enrollments that `keep` keeps, a page at a time in key order.
    fn enrollments_where(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: fn(&Enrollment) -> bool,
    ) -> Result<Page<Enrollment>, StoreError> {
        filtered_page(
            self,
            keys::ENROLLMENT,
            after,
            limit,
            false,
            decode_value,
            keep,
        )
    }
}

/// Writes enrollments.
pub(super) fn stage(enrollments: &[Enrollment], w: &mut Vec<KvWrite>) -> Result<(), StoreError> {
    for e in enrollments {
        w.push(KvWrite::Put(
            keys::enrollment(&e.record, &e.sequence),
            encode_value(e)?,
        ));
    }
    Ok(())
}
