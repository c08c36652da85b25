//! Schedule rules (SPEC §3.5): a slot fans out to one run per record of the
//! rule's `for_each` kind, a page of records per event so a slot over a
//! million records never builds one giant commit; without `for_each` the
//! rule runs once on a stand-in record that is never stored.

use super::{StateView, Work, internal, rules};
use crate::config::Workflows;
use crate::config::workflows::{Rule, RuleTrigger};
use crate::engine::{Effects, ReadError};
use crate::state::{Event, NewEvent, RecordKey};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

/// Records read per fan-out event.
const PAGE: usize = 500;

/// Handles a schedule slot (or the next page of one).
pub(super) fn fan_out(
    event: &Event,
    workflows: &Workflows,
    state: &dyn StateView,
    now: DateTime<Utc>,
) -> Result<Effects, ReadError> {
    let Some((index, rule)) = scheduled_rule(workflows, &event.data) else {
        // Removed by a reload since the slot fired.
        return Ok(Effects {
            handled: Some(event.seq),
            ..Effects::default()
        });
    };
    let for_each = match &rule.trigger {
        RuleTrigger::Schedule(s) => s.for_each.as_ref(),
        RuleTrigger::Events(_) => None,
    };
    let Some((kind, _)) = for_each else {
        let mut work = Work::new(workflows, state, event, now)?;
        rules::run_rule(&mut work, index, rule)?;
        return Ok(work.finish());
    };
    let after = event.data.get("after").and_then(Json::as_str);
    let page = state.records_of_kind(kind, after, PAGE)?;
    let mut changes = Effects {
        handled: Some(event.seq),
        ..Effects::default()
    };
    for record in page.items {
        changes
            .events
            .push(follow_up(event, record.key, internal::SCHEDULE_RUN, None));
    }
    if let Some(next) = page.next {
        let more = follow_up(event, event.record.clone(), internal::SCHEDULE, Some(next));
        changes.events.push(more);
    }
    Ok(changes)
}

/// An event carrying the slot on to a record (or to the next page).
fn follow_up(
    event: &Event,
    record: RecordKey,
    event_type: &str,
    after: Option<String>,
) -> NewEvent {
    let mut data: Map<String, Json> = event.data.clone();
    data.remove("after");
    if let Some(a) = after {
        data.insert("after".to_owned(), Json::String(a));
    }
    NewEvent {
        id: None,
        event_type: event_type.to_owned(),
        record,
        fields: Map::new(),
        data,
        occurred_at: event.occurred_at,
        // Pages are not a chain of rules: they keep the slot's depth.
        depth: event.depth,
    }
}

/// Runs a schedule rule for one record of its `for_each`, when the record
/// still exists and matches the `for_each` condition.
pub(super) fn run_for_record(work: &mut Work) -> Result<(), ReadError> {
    let workflows = work.workflows;
    let Some((index, rule)) = scheduled_rule(workflows, &work.event.data) else {
        return Ok(());
    };
    if work.created {
        // The record was listed but is not stored (nothing to run on).
        work.record_changed = false;
        return Ok(());
    }
    if let RuleTrigger::Schedule(s) = &rule.trigger
        && let Some((_, Some(condition))) = &s.for_each
    {
        let scope = work.scope(&[]);
        if !workflows
            .expressions
            .eval(condition, &scope)
            .unwrap_or(false)
        {
            return Ok(());
        }
    }
    rules::run_rule(work, index, rule)
}

fn scheduled_rule<'w>(
    workflows: &'w Workflows,
    data: &Map<String, Json>,
) -> Option<(usize, &'w Rule)> {
    let name = data.get("rule").and_then(Json::as_str)?;
    workflows
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.name == name && matches!(r.trigger, RuleTrigger::Schedule(_)))
}
