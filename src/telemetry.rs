//! Prometheus metrics (`GET /metrics`): counters recorded where things
//! happen, gauges read from the store when scraped. Every label value comes
//! from the workflow definitions or a fixed list (never a record id, never
//! an event type a sender made up), so the number of series stays bounded.

use crate::config::Workflows;
use crate::state::Run;
use crate::store::Store;
use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Pending timers and outbox rows counted at most per scrape (a scrape
/// stays cheap with millions pending; the gauge then reads this number).
const COUNTED: usize = 100_000;

/// Installs the process-wide recorder; `None` if one is installed already.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new().install_recorder().ok()
}

/// Events accepted by the API. Types the workflows do not name are
/// counted as `other`.
pub fn events_ingested<'a>(types: impl IntoIterator<Item = &'a str>, workflows: &Workflows) {
    let mut by_type = Tally::default();
    for event_type in types {
        let known = workflows.trigger_index.contains_key(event_type)
            || crate::config::compile::BUILTIN_EVENTS.contains(&event_type);
        by_type.add(if known { event_type } else { "other" });
    }
    for (label, n) in by_type.0 {
        counter!("dealflow_events_ingested_total", "type" => label.to_owned()).increment(n);
    }
}

/// Runs just committed: per rule, and per action kind and outcome.
pub fn runs_committed(runs: &[Run]) {
    let (mut by_rule, mut failures, mut actions) =
        (Tally::default(), Tally::default(), Tally::default());
    for run in runs {
        by_rule.add(run.rule.as_str());
        let failed = run.error.is_some()
            || run
                .actions
                .iter()
                .any(|a| a.outcome == crate::state::Outcome::Failed);
        if failed {
            failures.add(run.rule.as_str());
        }
        for a in &run.actions {
            let action = a.action.split(' ').next().unwrap_or_default();
            actions.add((action, a.outcome.name()));
        }
    }
    for (rule, n) in by_rule.0 {
        counter!("dealflow_rule_runs_total", "rule" => rule.to_owned()).increment(n);
    }
    for (rule, n) in failures.0 {
        counter!("dealflow_rule_failures_total", "rule" => rule.to_owned()).increment(n);
    }
    for ((action, outcome), n) in actions.0 {
        counter!("dealflow_actions_total", "action" => action.to_owned(), "outcome" => outcome)
            .increment(n);
    }
}

/// Counts per label before they are recorded: finding a counter in the
/// recorder costs more than the increment (3.7% of the daemon's time in
/// batches of 100, one lookup per event and per run), and a batch names
/// few labels.
struct Tally<K>(std::collections::HashMap<K, u64>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(std::collections::HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> Tally<K> {
    fn add(&mut self, key: K) {
        *self.0.entry(key).or_default() += 1;
    }
}

/// A delivery outcome: `sent`, `retried`, `dead`, `cancelled`, `deferred`.
pub fn delivery(kind: &'static str, outcome: &'static str) {
    counter!("dealflow_deliveries_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// A source's delivery, at each step: `received`, `verified`, `rejected`
/// (with the refusal or mapping reason), and the events it gave.
pub fn source(name: &str, step: SourceStep) {
    let source = name.to_owned();
    match step {
        SourceStep::Received => {
            counter!("dealflow_source_received_total", "source" => source).increment(1)
        }
        SourceStep::Verified => {
            counter!("dealflow_source_verified_total", "source" => source).increment(1)
        }
        SourceStep::Rejected(reason) => {
            counter!("dealflow_source_rejected_total", "source" => source, "reason" => reason)
                .increment(1)
        }
        SourceStep::Events(n) => {
            counter!("dealflow_source_events_total", "source" => source).increment(n)
        }
    }
}

/// What happened to a source's delivery (see [`source`]).
#[derive(Debug, Clone, Copy)]
pub enum SourceStep {
    /// It arrived.
    Received,
    /// Its signature or token held.
    Verified,
    /// Refused or kept unmapped, with a fixed label saying why.
    Rejected(&'static str),
    /// It gave this many events.
    Events(u64),
}

/// A timer fired, `lateness` after it was due.
pub fn timer_fired(lateness: chrono::Duration) {
    counter!("dealflow_timers_fired_total").increment(1);
    let seconds = lateness.num_milliseconds().max(0) as f64 / 1000.0;
    histogram!("dealflow_timer_lateness_seconds").record(seconds);
}

/// Console pages open with live updates (`delta` is +1 or -1).
pub fn console_live_pages(delta: f64) {
    metrics::gauge!("dealflow_console_live_pages").increment(delta);
}

/// A reload that succeeded or failed.
pub fn reload(succeeded: bool) {
    let result = if succeeded { "success" } else { "failure" };
    counter!("dealflow_reloads_total", "result" => result).increment(1);
}

/// Sets the gauges read from the store and renders everything.
pub fn render<S: Store>(
    handle: &PrometheusHandle,
    store: &S,
    workflows: &Workflows,
    now: DateTime<Utc>,
) -> String {
    gauge!("dealflow_store_bytes").set(store.size_on_disk() as f64);
    if let (Ok(stored), Ok(handled)) = (store.last_seq(), store.cursor()) {
        gauge!("dealflow_events_stored").set(stored as f64);
        gauge!("dealflow_events_waiting").set(stored.saturating_sub(handled) as f64);
    }
    if let Ok(waiting) = store.waiting_outbox(COUNTED) {
        gauge!("dealflow_outbox_waiting").set(waiting as f64);
    }
    let age = store.next_outbox_due().ok().flatten().map_or(0.0, |due| {
        (now - due).num_milliseconds().max(0) as f64 / 1000.0
    });
    gauge!("dealflow_outbox_oldest_due_age_seconds").set(age);
    if let Ok(pending) = store.pending_timers(COUNTED) {
        gauge!("dealflow_timers_pending").set(pending as f64);
    }
    gauge!("dealflow_workflows_rules").set(workflows.rules.len() as f64);
    gauge!("dealflow_workflows_info", "version" => workflows.version.clone()).set(1.0);
    handle.render()
}
