//! Kinds are open (SPEC §2): an event for a kind that no workflow names is
//! stored like any other, and counted here so a typo (`leda` for `lead`)
//! shows in `/v1/status` instead of passing in silence.

use crate::config::Workflows;
use crate::state::NewEvent;
use crate::store::Appended;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Distinct kinds remembered by name; more are summed under `other`, so a
/// sender inventing kinds cannot grow the daemon's memory.
const REMEMBERED: usize = 100;

/// Events stored since the daemon started, per kind that no workflow names.
#[derive(Default)]
pub struct UnnamedKinds {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl UnnamedKinds {
    /// The position and kind of each event whose kind the workflows do not
    /// name (empty in the common case, so nothing is allocated).
    pub fn find(events: &[NewEvent], workflows: &Workflows) -> Vec<(usize, String)> {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| !workflows.kinds.contains(&e.record.kind))
            .map(|(index, e)| (index, e.record.kind.clone()))
            .collect()
    }

    /// Counts the events of `found` that were stored, not duplicates.
    pub fn count(&self, found: Vec<(usize, String)>, appended: &[Appended]) {
        if found.is_empty() {
            return;
        }
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let stored = found
            .into_iter()
            .filter(|(index, _)| appended.get(*index).is_some_and(|a| !a.duplicate));
        for (_, kind) in stored {
            metrics::counter!("dealflow_events_unnamed_kind_total").increment(1);
            let key = if counts.contains_key(&kind) || counts.len() < REMEMBERED {
                kind
            } else {
                "other".to_owned()
            };
            *counts.entry(key).or_default() += 1;
        }
    }

    /// `[{"kind": .., "events": ..}]`, for the kinds the given workflows
    /// still do not name (a reload that adds `for: leda` drops it).
    pub fn listing(&self, workflows: &Workflows) -> Value {
        let Ok(counts) = self.counts.lock() else {
            return json!([]);
        };
        counts
            .iter()
            .filter(|(kind, _)| !workflows.kinds.contains(*kind))
            .map(|(kind, events)| json!({ "kind": kind, "events": events }))
            .collect()
    }
}
