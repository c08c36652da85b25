//! One round of the worker: several events handled against the store plus
//! the round's own uncommitted changes, then committed as one atomic batch.
//! Reads go through this overlay so each event sees what the events before
//! it in the round did, exactly as if each had been committed alone.

use crate::engine::{Effects, ReadError, StateView};
use crate::state::{Enrollment, Page, Record, RecordKey, StageVisit, Task, TaskStatus};
use crate::store::{self, Store};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The store seen through a round's pending changes.
pub struct Round<'a, S: Store> {
    store: &'a S,
    records: HashMap<RecordKey, Record>,
    tasks: HashMap<String, Task>,
    counters: HashMap<String, u64>,
    open_delta: HashMap<String, i64>,
    visits: HashMap<RecordKey, BTreeMap<u64, StageVisit>>,
    enrollments: HashMap<RecordKey, BTreeMap<String, Enrollment>>,
    suppressed: HashSet<String>,
    pending: Effects,
}

impl<'a, S: Store> Round<'a, S> {
    /// An empty round over `store`.
    pub fn new(store: &'a S) -> Self {
        Round {
            store,
            records: HashMap::new(),
            tasks: HashMap::new(),
            counters: HashMap::new(),
            open_delta: HashMap::new(),
            visits: HashMap::new(),
            enrollments: HashMap::new(),
            suppressed: HashSet::new(),
            pending: Effects::default(),
        }
    }

    /// Adds one event's effects to the round.
    pub fn absorb(&mut self, mut changes: Effects) -> Result<(), ReadError> {
        for task in std::mem::take(&mut changes.tasks) {
            let old = self.task(&task.id)?;
            if let Some(o) = old.filter(|o| o.status == TaskStatus::Open) {
                *self
                    .open_delta
                    .entry(o.owner.unwrap_or_default())
                    .or_default() -= 1;
            }
            if task.status == TaskStatus::Open {
                *self
                    .open_delta
                    .entry(task.owner.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            // One version per task in the batch: the store keeps its
            // open-task index from the stored version.
            self.pending.tasks.retain(|t| t.id != task.id);
            self.pending.tasks.push(task.clone());
            self.tasks.insert(task.id.clone(), task);
        }
        for r in &changes.records {
            self.records.insert(r.key.clone(), r.clone());
        }
        for (key, index, visit) in &changes.stage_visits {
            self.visits
                .entry(key.clone())
                .or_default()
                .insert(*index, visit.clone());
        }
        for e in &changes.enrollments {
            self.enrollments
                .entry(e.record.clone())
                .or_default()
                .insert(e.sequence.clone(), e.clone());
        }
        for (name, value) in &changes.counters {
            self.counters.insert(name.clone(), *value);
        }
        self.suppressed
            .extend(changes.suppress.iter().map(|s| s.address.clone()));
        // Everything else is kept as it comes (tasks were taken above).
        self.pending.append(changes);
        Ok(())
    }

    /// The round's effects, for one commit.
    pub fn into_effects(self) -> Effects {
        self.pending
    }
}

impl<S: Store> StateView for Round<'_, S> {
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, ReadError> {
        match self.records.get(key) {
            Some(r) => Ok(Some(r.clone())),
            None => Ok(store::RecordTable::record(self.store, key)?),
        }
    }

    fn counter(&self, name: &str) -> Result<u64, ReadError> {
        match self.counters.get(name) {
            Some(v) => Ok(*v),
            None => Ok(store::CounterTable::counter(self.store, name)?),
        }
    }

    fn open_task_count(&self, owner: &str) -> Result<usize, ReadError> {
        let stored = store::TaskTable::open_task_count(self.store, owner)? as i64;
        Ok((stored + self.open_delta.get(owner).copied().unwrap_or(0)).max(0) as usize)
    }

    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, ReadError> {
        let mut visits = store::StageHistoryTable::stage_history(self.store, key)?;
        for (index, visit) in self.visits.get(key).into_iter().flatten() {
            let i = *index as usize;
            if i < visits.len() {
                visits[i] = visit.clone();
            } else {
                visits.push(visit.clone());
            }
        }
        Ok(visits)
    }

    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, ReadError> {
        let mut list = store::EnrollmentTable::enrollments(self.store, key)?;
        for (sequence, e) in self.enrollments.get(key).into_iter().flatten() {
            list.retain(|x| &x.sequence != sequence);
            list.push(e.clone());
        }
        Ok(list)
    }

    fn task(&self, id: &str) -> Result<Option<Task>, ReadError> {
        match self.tasks.get(id) {
            Some(t) => Ok(Some(t.clone())),
            None => Ok(store::TaskTable::task(self.store, id)?),
        }
    }

    fn is_suppressed(&self, email: &str) -> Result<bool, ReadError> {
        Ok(self
            .suppressed
            .contains(&crate::state::address::normalized(email))
            || store::SuppressionTable::is_suppressed(self.store, email)?)
    }

    /// Stored records only: a schedule's fan-out may miss a record created
    /// earlier in the same round, which it sees at the next slot.
    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, ReadError> {
        StateView::records_of_kind(self.store, kind, after, limit)
    }

    /// Stored enrollments only: a reload is planned between rounds.
    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Enrollment>, ReadError> {
        StateView::active_enrollments(self.store, after, limit)
    }
}
