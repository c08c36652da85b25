//! Where the engine meets the store: the store read as the engine's
//! [`StateView`], and a store failure as the engine's [`ReadError`] (and
//! back). The engine names no storage; the worker, above both, translates.
//! (What the engine answers, `Effects`, is a state type the store commits
//! as it is.)

use crate::engine::{ReadError, StateView};
use crate::state::{Enrollment, Page, Record, RecordKey, StageVisit, Task};
use crate::store::{self, Store, StoreError};

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        let about_data = e.is_about_data();
        ReadError::new(e, about_data)
    }
}

/// The store's error behind a failed read, to decide what to do about it
/// (back off, set the event aside) and to answer it.
impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e.cause().downcast_ref::<StoreError>() {
            Some(store) => store.clone(),
            None => StoreError::backend_said(e.to_string()),
        }
    }
}

impl<S: Store> StateView for S {
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, ReadError> {
        Ok(store::RecordTable::record(self, key)?)
    }
    fn counter(&self, name: &str) -> Result<u64, ReadError> {
        Ok(store::CounterTable::counter(self, name)?)
    }
    fn open_task_count(&self, owner: &str) -> Result<usize, ReadError> {
        Ok(store::TaskTable::open_task_count(self, owner)?)
    }
    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, ReadError> {
        Ok(store::StageHistoryTable::stage_history(self, key)?)
    }
    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, ReadError> {
        Ok(store::EnrollmentTable::enrollments(self, key)?)
    }
    fn task(&self, id: &str) -> Result<Option<Task>, ReadError> {
        Ok(store::TaskTable::task(self, id)?)
    }
    fn is_suppressed(&self, email: &str) -> Result<bool, ReadError> {
        Ok(store::SuppressionTable::is_suppressed(self, email)?)
    }
    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, ReadError> {
        Ok(store::RecordTable::records_of_kind(
            self, kind, after, limit,
        )?)
    }
    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, ReadError> {
        Ok(store::EnrollmentTable::active_enrollments(
            self, after, limit,
        )?)
    }
}
