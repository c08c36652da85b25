//! The engine: one event + the state it touches + the time → the new state,
//! the events it raises, the tasks and outbox rows it queues, and a run log.
//!
//! Pure: it performs no I/O and reads no clock. It reads state through
//! [`StateView`] and answers [`Effects`] that the caller commits atomically,
//! so the daemon, `simulate` and the tests all run exactly this code.
//!
//! Owns: what an event means (rules, gating, sequences, scoring, timers to
//! set) and what a new workflow set means for running state
//! ([`reload_plan`]). Never: performs I/O, reads a clock, commits, or
//! depends on the store, the worker, the scheduler, delivery or the API.

mod actions;
mod context;
mod effects;
mod pipeline;
pub mod reload_plan;
mod rules;
mod schedule;
pub mod scoring;
pub mod sequence;
mod timers;

pub use crate::config::Workflows;
use crate::state::BuiltinEvent;
use crate::state::{Enrollment, Event, NewEvent, Record, RecordKey, Run, StageVisit, Task};
pub use actions::unsubscribe_placeholder;
use chrono::{DateTime, Utc};
pub use context::{record_json, time};
pub use effects::{Effects, ReadError};
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

/// Events caused by events caused by ... deeper than this are cut, so two
/// rules that trigger each other cannot loop forever.
pub const MAX_CHAIN_DEPTH: u32 = 16;

/// Event types dealflow raises for itself: refused from outside, never seen
/// by rules.
pub mod internal {
    /// The prefix the API refuses.
    pub const PREFIX: &str = "dealflow.";
    /// A sequence enrollment's timer: run its next steps.
    pub const STEP: &str = "dealflow.step";
    /// A schedule slot: find the records it runs for.
    pub const SCHEDULE: &str = "dealflow.schedule";
    /// A schedule rule's run for one record of its `for_each`.
    pub const SCHEDULE_RUN: &str = "dealflow.schedule_run";
    /// A gated stage move asked for through the API (handled at once by the
    /// worker, never stored).
    pub const MOVE_REQUESTED: &str = "stage.move_requested";
    /// The record kind of schedule slots (never stored).
    pub const SCHEDULE_KIND: &str = "dealflow.schedule";
}

/// What the engine may read.
pub trait StateView {
    /// A record.
    fn record(&self, key: &RecordKey) -> Result<Option<Record>, ReadError>;
    /// A counter.
    fn counter(&self, name: &str) -> Result<u64, ReadError>;
    /// Open tasks of a person.
    fn open_task_count(&self, owner: &str) -> Result<usize, ReadError>;
    /// A record's stage visits.
    fn stage_history(&self, key: &RecordKey) -> Result<Vec<StageVisit>, ReadError>;
    /// A record's enrollments.
    fn enrollments(&self, key: &RecordKey) -> Result<Vec<Enrollment>, ReadError>;
    /// A task.
    fn task(&self, id: &str) -> Result<Option<Task>, ReadError>;
    /// Whether an address must not be emailed.
    fn is_suppressed(&self, email: &str) -> Result<bool, ReadError>;
    /// Records of a kind, a page at a time (`after` is the previous page's `next`).
    fn records_of_kind(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::state::Page<Record>, ReadError>;
    /// Every active enrollment, a page at a time (a reload plans their moves).
    fn active_enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::state::Page<Enrollment>, ReadError>;
}

/// The answer to a requested stage move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveResult {
    /// Moved (or already there).
    Moved {
        /// Stage before.
        from: Option<String>,
        /// Stage now.
        to: String,
    },
    /// Refused; nothing changed but the `stage.rejected` event.
    Refused(Vec<String>),
    /// The record does not exist or its kind has no pipeline.
    NotFound(String),
}

/// One event's handling in progress: the record as it changes, and
/// everything to commit.
pub(crate) struct Work<'a> {
    pub workflows: &'a Workflows,
    pub state: &'a dyn StateView,
    pub now: DateTime<Utc>,
    pub event: &'a Event,
    pub record: Record,
    /// Whether the record is new with this event.
    pub created: bool,
    pub record_changed: bool,
    pub history: Vec<StageVisit>,
    pub counters: HashMap<String, u64>,
    pub open_tasks: HashMap<String, i64>,
    /// The record's enrollments once read (see [`Work::enrollments`]).
    enrollments: Option<Vec<Enrollment>>,
    /// The expression scope of the record as it is now, built once per change.
    scope_cache: Option<minijinja::Value>,
    /// Fields rules changed; one `record.updated` lists them all.
    pub updated_fields: Vec<String>,
    /// Fields the event itself changed.
    pub changed_fields: Vec<String>,
    pub effects: Effects,
}

impl<'a> Work<'a> {
    fn new(
        workflows: &'a Workflows,
        state: &'a dyn StateView,
        event: &'a Event,
        now: DateTime<Utc>,
    ) -> Result<Self, ReadError> {
        let existing = state.record(&event.record)?;
        let record_changed = existing.is_none();
        let record = existing.unwrap_or_else(|| Record::new(event.record.clone(), now));
        // Only entering a stage sets `pipeline`, and records are never
        // deleted: a record without one has no stage history to read.
        let history = match record.pipeline {
            Some(_) => state.stage_history(&event.record)?,
            None => Vec::new(),
        };
        Ok(Work {
            workflows,
            state,
            now,
            event,
            history,
            enrollments: None,
            record,
            created: record_changed,
            record_changed,
            counters: HashMap::new(),
            open_tasks: HashMap::new(),
            updated_fields: Vec::new(),
            changed_fields: Vec::new(),
            scope_cache: None,
            effects: Effects::default(),
        })
    }

    /// The record's enrollments, read on first use: most events (a form
    /// post no sequence listens for) never look at them, and reading them
    /// was a store scan per event, a tenth of the engine's work under W1.
    pub fn enrollments(&mut self) -> Result<&mut Vec<Enrollment>, ReadError> {
        let enrollments = match self.enrollments.take() {
            Some(read) => read,
            None => self.state.enrollments(&self.event.record)?,
        };
        Ok(self.enrollments.insert(enrollments))
    }

    /// Raises a built-in event on the same record, one level deeper in the
    /// chain.
    pub fn raise(&mut self, event: BuiltinEvent, data: Json) {
        let record = self.record.key.clone();
        self.raise_on(record, event.name(), data);
    }

    /// Raises an event a workflow names (`emit`) on the same record.
    pub fn emit(&mut self, event_type: &str, data: Json) {
        let record = self.record.key.clone();
        self.raise_on(record, event_type, data);
    }

    /// Raises an event on a record, one level deeper in the chain.
    fn raise_on(&mut self, record: RecordKey, event_type: &str, data: Json) {
        let data = match data {
            Json::Object(map) => map,
            _ => Map::new(),
        };
        self.effects.events.push(NewEvent {
            id: None,
            event_type: event_type.to_owned(),
            record,
            fields: Map::new(),
            data,
            occurred_at: self.now,
            depth: self.event.depth + 1,
        });
    }

    /// The expression scope for the record as it is now.
    pub fn scope(&mut self, extra: &[(&str, Json)]) -> minijinja::Value {
        if !extra.is_empty() {
            return context::scope(&self.record, self.event, self.workflows, self.now, extra);
        }
        if let Some(scope) = &self.scope_cache {
            return scope.clone();
        }
        let scope = context::scope(&self.record, self.event, self.workflows, self.now, &[]);
        self.scope_cache = Some(scope.clone());
        scope
    }

    /// Marks the record changed: it will be written, and scopes rebuilt.
    pub fn touch(&mut self) {
        self.record_changed = true;
        self.scope_cache = None;
    }

    /// A counter's value, with this handling's updates.
    pub fn counter(&mut self, name: &str) -> Result<u64, ReadError> {
        if let Some(v) = self.counters.get(name) {
            return Ok(*v);
        }
        let v = self.state.counter(name)?;
        self.counters.insert(name.to_owned(), v);
        Ok(v)
    }

    /// Moves the record to a stage, closing the previous visit.
    pub fn enter_stage(&mut self, pipeline: &str, to: &str) {
        let from = self.record.stage.clone();
        let days_in_previous = self.record.days_in_stage(self.now);
        let index = self.history.len() as u64;
        if let Some(last) = self.history.last_mut().filter(|v| v.exited_at.is_none()) {
            last.exited_at = Some(self.now);
            self.effects
                .stage_visits
                .push((self.record.key.clone(), index - 1, last.clone()));
        }
        let visit = StageVisit {
            pipeline: pipeline.to_owned(),
            stage: to.to_owned(),
            entered_at: self.now,
            exited_at: None,
            owner: self.record.owner.clone(),
            ..StageVisit::default()
        };
        self.effects
            .stage_visits
            .push((self.record.key.clone(), index, visit.clone()));
        self.history.push(visit);
        self.record.pipeline = Some(pipeline.to_owned());
        self.record.stage = Some(to.to_owned());
        self.record.stage_entered_at = Some(self.now);
        self.touch();
        timers::arm_stall(self, index as usize);
        self.raise(
            BuiltinEvent::StageChanged,
            json!({ "from": from, "to": to, "days_in_previous": days_in_previous }),
        );
    }

    /// Effects the record's current stage visit (reports' stalls and
    /// refusals), if it is in a stage.
    pub fn update_open_visit(&mut self, update: impl FnOnce(&mut StageVisit)) {
        let Some(index) = self.history.len().checked_sub(1) else {
            return;
        };
        let visit = &mut self.history[index];
        if visit.exited_at.is_some() {
            return;
        }
        update(visit);
        // A later write of the same visit replaces an earlier one.
        let visit = visit.clone();
        self.effects
            .stage_visits
            .push((self.record.key.clone(), index as u64, visit));
    }

    /// A requested move: checked against the gates, applied or refused.
    pub fn request_move(&mut self, to: &str) -> MoveResult {
        let Some(pipeline) = self.workflows.pipeline_for(&self.record.key.kind) else {
            return MoveResult::NotFound(format!("no pipeline is for {}", self.record.key.kind));
        };
        if self.record.stage.as_deref() == Some(to) {
            return MoveResult::Moved {
                from: Some(to.to_owned()),
                to: to.to_owned(),
            };
        }
        let scope = self.scope(&[]);
        let unmet = pipeline::unmet_for_move(
            pipeline,
            &self.record,
            to,
            &self.workflows.expressions,
            &scope,
        );
        let from = self.record.stage.clone();
        if unmet.is_empty() {
            self.enter_stage(&pipeline.name, to);
            MoveResult::Moved {
                from,
                to: to.to_owned(),
            }
        } else {
            self.raise(
                BuiltinEvent::StageRejected,
                json!({ "from": from, "to": to, "unmet": unmet }),
            );
            // A move to a stage that does not exist says nothing about the
            // stage the record is in: reports must not call it blocking.
            if pipeline.stage_index(to).is_none() {
                return MoveResult::Refused(unmet);
            }
            self.update_open_visit(|visit| {
                visit.refused_moves += 1;
                for requirement in &unmet {
                    *visit.refusals.entry(requirement.clone()).or_default() += 1;
                }
            });
            MoveResult::Refused(unmet)
        }
    }

    /// Puts a record with no stage into its pipeline's first stage once the
    /// first stage's requirements hold (SPEC §3.4).
    fn enter_pipeline_if_ready(&mut self) {
        if self.record.stage.is_some() {
            return;
        }
        let Some(pipeline) = self.workflows.pipeline_for(&self.record.key.kind) else {
            return;
        };
        let scope = self.scope(&[]);
        if pipeline::may_enter_first(pipeline, &self.record, &self.workflows.expressions, &scope)
            && let Some(first) = pipeline.stages.first()
        {
            let (name, stage) = (pipeline.name.clone(), first.name.clone());
            self.enter_stage(&name, &stage);
        }
    }

    /// Merges fields into the record; answers the names that changed.
    pub fn merge_fields(&mut self, fields: &Map<String, Json>) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, value) in fields {
            if name == "owner" {
                let owner = value.as_str().map(String::from).filter(|o| !o.is_empty());
                if owner != self.record.owner {
                    self.record.owner = owner;
                    changed.push(name.clone());
                }
            } else if self.record.fields.get(name) != Some(value) {
                self.record.fields.insert(name.clone(), value.clone());
                changed.push(name.clone());
            }
        }
        if !changed.is_empty() {
            self.touch();
        }
        changed
    }

    /// Remembers fields that rules changed, for the one `record.updated`.
    pub fn note_updated(&mut self, fields: Vec<String>) {
        for f in fields {
            if !self.updated_fields.contains(&f) {
                self.updated_fields.push(f);
            }
        }
    }

    /// A visit this event opened belongs to the owner the event leaves: a
    /// rule that assigns the record while it enters a stage (a form that
    /// creates, qualifies and routes a lead at once) gives it its owner.
    fn own_new_visits(&mut self) {
        let owner = &self.record.owner;
        let opened = self
            .effects
            .stage_visits
            .iter_mut()
            .filter(|(_, _, v)| v.exited_at.is_none() && v.entered_at == self.now);
        for (_, _, visit) in opened {
            visit.owner.clone_from(owner);
        }
    }

    /// Finishes an event that no longer applies (a timer that outlived its
    /// reason): only the cursor moves.
    fn finish_stale(self) -> Effects {
        Effects {
            handled: Some(self.event.seq),
            ..Effects::default()
        }
    }

    fn finish(mut self) -> Effects {
        self.own_new_visits();
        if !self.updated_fields.is_empty() {
            let changed = std::mem::take(&mut self.updated_fields);
            self.raise(BuiltinEvent::RecordUpdated, json!({ "changed": changed }));
        }
        // Schedule slots run on a stand-in record that is never stored.
        if self.record_changed && self.record.key.kind != internal::SCHEDULE_KIND {
            self.record.updated_at = self.now;
            self.effects.records.push(self.record);
        }
        self.effects.counters.extend(self.counters);
        self.effects.handled = Some(self.event.seq);
        self.effects
    }
}

/// Handles one event: merges its fields, raises `record.created` /
/// `record.updated`, enters the pipeline when ready, and runs every rule it
/// triggers. The answer is everything to commit, cursor included.
pub fn handle(
    event: &Event,
    workflows: &Workflows,
    state: &dyn StateView,
    now: DateTime<Utc>,
) -> Result<Effects, ReadError> {
    if event.event_type == internal::SCHEDULE {
        return schedule::fan_out(event, workflows, state, now);
    }
    let mut work = Work::new(workflows, state, event, now)?;
    if event.depth > MAX_CHAIN_DEPTH {
        work.effects.runs.push(chain_cut_run(event, workflows, now));
        return Ok(work.finish());
    }
    match event.event_type.as_str() {
        internal::STEP => {
            sequence::resume(&mut work)?;
            return Ok(work.finish());
        }
        internal::SCHEDULE_RUN => {
            schedule::run_for_record(&mut work)?;
            return Ok(work.finish());
        }
        _ => {}
    }
    let builtin = BuiltinEvent::named(&event.event_type);
    match builtin {
        Some(BuiltinEvent::StageStalled) if !timers::on_stalled(&mut work) => {
            return Ok(work.finish_stale());
        }
        Some(BuiltinEvent::StageStalled) => work.update_open_visit(|visit| visit.stalls += 1),
        Some(BuiltinEvent::TaskOverdue) if !timers::on_overdue(&mut work)? => {
            return Ok(work.finish_stale());
        }
        _ => {}
    }
    let created = work.created;
    let changed = work.merge_fields(&event.fields);
    work.changed_fields = changed.clone();
    if created && builtin != Some(BuiltinEvent::RecordCreated) {
        work.raise(BuiltinEvent::RecordCreated, json!({}));
    } else if builtin != Some(BuiltinEvent::RecordUpdated) {
        work.note_updated(changed);
    }
    apply_builtin(&mut work, builtin)?;
    sequence::exit_on_event(&mut work)?;
    work.enter_pipeline_if_ready();
    scoring::apply(&mut work, rules::run_threshold)?;
    rules::run_rules(&mut work)?;
    Ok(work.finish())
}

/// Built-in events that change state themselves before rules see them.
fn apply_builtin(work: &mut Work, builtin: Option<BuiltinEvent>) -> Result<(), ReadError> {
    suppress_on_opt_out(work, builtin);
    if builtin == Some(BuiltinEvent::TaskCompleted) {
        let id = work
            .event
            .data
            .get("task_id")
            .and_then(Json::as_str)
            .map(String::from);
        if let Some(mut task) = id.map(|id| work.state.task(&id)).transpose()?.flatten()
            && task.status == crate::state::TaskStatus::Open
        {
            task.status = crate::state::TaskStatus::Completed;
            task.completed_at = Some(work.now);
            timers::disarm_overdue(work, &task);
            work.effects.tasks.push(task);
        }
    }
    Ok(())
}

/// An unsubscribe or a hard bounce puts the address on the suppression
/// list, which every workflow's email is checked against.
fn suppress_on_opt_out(work: &mut Work, builtin: Option<BuiltinEvent>) {
    let data = &work.event.data;
    let status = data.get("status").and_then(Json::as_str);
    let opted_out = match builtin {
        Some(BuiltinEvent::EmailUnsubscribed) => true,
        // A 4.x.x bounce is temporary: the address may work tomorrow.
        Some(BuiltinEvent::EmailBounced) => !status.is_some_and(|s| s.starts_with('4')),
        _ => false,
    };
    if !opted_out {
        return;
    }
    let address = data
        .get("email")
        .or_else(|| work.record.fields.get("email"))
        .and_then(Json::as_str);
    let reason = match (builtin, status) {
        (Some(BuiltinEvent::EmailBounced), Some(status)) => format!("bounced ({status})"),
        (Some(BuiltinEvent::EmailBounced), None) => "bounced".to_owned(),
        _ => match data.get("via").and_then(Json::as_str) {
            Some(via) => format!("unsubscribed ({via})"),
            None => "unsubscribed".to_owned(),
        },
    };
    if let Some(address) = address {
        let suppression = crate::state::Suppression::new(address, reason, work.now);
        work.effects.suppress.push(suppression);
    }
}

/// Requests a gated stage move from outside (API): refused moves change
/// nothing but raise `stage.rejected`.
pub fn move_stage(
    key: &RecordKey,
    to: &str,
    command: &Event,
    workflows: &Workflows,
    state: &dyn StateView,
    now: DateTime<Utc>,
) -> Result<(MoveResult, Effects), ReadError> {
    if state.record(key)?.is_none() {
        return Ok((
            MoveResult::NotFound(format!("no record {key}")),
            Effects::default(),
        ));
    }
    let mut work = Work::new(workflows, state, command, now)?;
    let result = work.request_move(to);
    let mut changes = work.finish();
    changes.handled = None;
    Ok((result, changes))
}

fn chain_cut_run(event: &Event, workflows: &Workflows, now: DateTime<Utc>) -> Run {
    Run {
        id: format!("{:016}-chain", event.seq),
        rule: String::new(),
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        record: event.record.clone(),
        version: workflows.version.clone(),
        condition: None,
        matched: false,
        saw: Default::default(),
        actions: Vec::new(),
        at: now,
        error: Some(format!(
            "event chain deeper than {MAX_CHAIN_DEPTH}: rules keep raising events that trigger rules; this event was not handled"
        )),
    }
}

#[cfg(test)]
mod tests;
