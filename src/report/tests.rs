//! A month of known moves, sends and handoffs on the virtual clock: every
//! report figure is checked against what the scenario did.

use super::*;
use crate::simulation::{TimedEvent, run_on};
use crate::state::Effects;
use crate::state::Task;
use crate::store::{KvStore, MemoryBackend, OutboxTable, TaskTable};
use chrono::Duration;
use serde_json::{Value as Json, json};

const FLOWS: &str = r#"
team:
  people: [ { email: ana@x.example }, { email: ben@x.example } ]
  teams:
    ae: [ana@x.example]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: qualified, stall_after: 5d, stall_repeat: 5d, exit_require: [budget] }
      - { name: proposal }
      - { name: won, outcome: won }
      - { name: lost, outcome: lost }
sequences:
  - name: outreach
    for: lead
    steps:
      - { id: intro, email: { subject: "Hi", body: "Hello" } }
      - wait: 3d
      - { id: follow, email: { subject: "Again", body: "Again" } }
      - wait: 3d
      - { id: last, email: { subject: "Last", body: "Bye" } }
rules:
  - { name: start, for: lead, on: signed.up, do: [ { enroll: outreach } ] }
  - { name: hand, for: lead, on: mql, do: [ { handoff: { to: ae } } ] }
  - { name: advance, for: deal, on: deal.advance, do: [ { move: proposal } ] }
  - { name: win, for: deal, on: deal.win, do: [ { move: won } ] }
"#;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
        .unwrap()
        .to_utc()
}

fn at(days: f64) -> DateTime<Utc> {
    start() + Duration::minutes((days * 1440.0) as i64)
}

fn event(days: f64, event_type: &str, record: &str, fields: Json) -> TimedEvent {
    crate::simulation::timed_event(at(days), event_type, record, fields)
}

fn scenario() -> Vec<TimedEvent> {
    let mut events = vec![
        // D1: refused once for want of a budget, then through to won.
        event(
            0.0,
            "deal.opened",
            "deal/D1",
            json!({"owner": "ana@x.example"}),
        ),
        event(2.0, "deal.advance", "deal/D1", json!({})),
        event(3.0, "deal.advance", "deal/D1", json!({"budget": "50k"})),
        event(10.0, "deal.win", "deal/D1", json!({})),
        // D2: never moves; stalls on days 5, 10, 15, 20 and 25.
        event(
            0.0,
            "deal.opened",
            "deal/D2",
            json!({"owner": "ana@x.example"}),
        ),
        // D3: refused once, then to proposal, where it stays.
        event(
            0.0,
            "deal.opened",
            "deal/D3",
            json!({"owner": "ben@x.example"}),
        ),
        event(1.0, "deal.advance", "deal/D3", json!({})),
        event(4.0, "deal.advance", "deal/D3", json!({"budget": "10k"})),
        // Outreach: L1 replies to the intro, L2 bounces after the
        // follow-up, L3 runs to the end, L4 unsubscribes after the intro.
        event(1.0, "email.replied", "lead/L1", json!({})),
        event(4.0, "email.bounced", "lead/L2", json!({})),
        event(2.0, "email.unsubscribed", "lead/L4", json!({})),
        // Two handoffs to the AE team: L5's task is done 6 hours later.
        event(1.0, "mql", "lead/L5", json!({})),
        event(2.0, "mql", "lead/L6", json!({})),
    ];
    for lead in ["L1", "L2", "L3", "L4"] {
        let email = format!("{}@p.example", lead.to_lowercase());
        events.push(event(
            0.0,
            "signed.up",
            &format!("lead/{lead}"),
            json!({ "email": email }),
        ));
    }
    events
}

fn handoff_task(store: &KvStore<MemoryBackend>, lead: &str) -> Task {
    let tasks = store
        .tasks(&TaskFilter::default(), None, 100)
        .unwrap()
        .items;
    tasks
        .into_iter()
        .find(|t| t.from_handoff && t.record.id == lead)
        .expect("the handoff made a task")
}

/// Runs the month: up to day 1.1, then L5's task is completed at 1.25,
/// then on to day 28; every queued email is then marked sent, as the
/// delivery worker would have.
fn a_month() -> (Workflows, KvStore<MemoryBackend>) {
    let w = crate::config::load_for_tests(FLOWS);
    let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
    let (early, late): (Vec<_>, Vec<_>) = scenario().into_iter().partition(|e| e.at < at(1.1));
    block_on(run_on(&store, &w, start(), early, at(1.1))).unwrap();
    let task = handoff_task(&store, "L5");
    let mut done = event(1.25, "task.completed", "lead/L5", json!({}));
    done.event.data.insert("task_id".into(), json!(task.id));
    let mut late = late;
    late.push(done);
    block_on(run_on(&store, &w, at(1.1), late, at(28.0))).unwrap();
    let mut sent = Effects::default();
    for_each_item(
        |after| store.outbox_matching(&OutboxFilter::default(), after, PAGE),
        |mut row| {
            row.status = OutboxStatus::Sent;
            sent.outbox.push(row);
        },
    )
    .unwrap();
    store.commit(sent.into()).unwrap();
    (w, store)
}

#[test]
fn a_month_of_known_moves_sends_and_handoffs_gives_exact_figures() {
    let (w, store) = a_month();

    let pipeline = &pipeline_report(&store, &w, start()).unwrap()[0];
    let stage = |name: &str| pipeline.stage(name).unwrap();
    let q = stage("qualified");
    assert_eq!(
        (q.entered, q.exited, q.still_in, q.advanced, q.won_later),
        (3, 2, 1, 2, 1)
    );
    assert_eq!(
        (q.median_hours_in_stage, q.p90_hours_in_stage),
        (Some(72.0), Some(96.0))
    );
    assert_eq!((q.stalled, q.stall_notices), (1, 5));
    assert_eq!(q.refused_moves, 2);
    assert_eq!(
        q.most_blocking.as_deref(),
        Some("budget is required to leave qualified")
    );
    let p = stage("proposal");
    assert_eq!((p.entered, p.advanced, p.still_in), (2, 1, 1));
    assert_eq!(p.median_hours_in_stage, Some(7.0 * 24.0));
    assert_eq!(
        (pipeline.won, pipeline.lost, pipeline.win_rate),
        (1, 0, Some(1.0))
    );
    assert_eq!(pipeline.median_cycle_days, Some(10.0));
    let ben = &pipeline.by_owner["ben@x.example"];
    assert_eq!((ben[0].1.entered, ben[0].1.refused_moves), (1, 1));

    let outreach = &sequences_report(&store).unwrap()["outreach"];
    assert_eq!(
        (outreach.enrolled, outreach.active, outreach.completed),
        (4, 0, 1)
    );
    assert_eq!(outreach.reply_rate, Some(0.25));
    let step = |id: &str| outreach.steps[id].clone();
    let intro = step("intro");
    assert_eq!(
        (intro.sent, intro.replied, intro.unsubscribed, intro.bounced),
        (4, 1, 1, 0)
    );
    assert_eq!(intro.reply_rate, Some(0.25));
    let follow = step("follow");
    assert_eq!((follow.sent, follow.bounced, follow.replied), (2, 1, 0));
    assert_eq!((step("last").sent, step("last").replied), (1, 0));

    let owners = owners_report(&store, &w, start(), at(28.0)).unwrap();
    let ana = &owners["ana@x.example"];
    assert_eq!((ana.handoffs_received, ana.handoffs_open), (2, 1));
    assert_eq!(ana.median_handoff_response_hours, Some(6.0));
    assert_eq!(ana.open_tasks, 1);
    assert_eq!(ana.records_by_stage["deal/qualified"], 1);
    assert_eq!(ana.records_by_stage["deal/won"], 1);
    assert_eq!(owners["ben@x.example"].records_by_stage["deal/proposal"], 1);
}

#[test]
fn a_period_that_starts_later_leaves_earlier_handoffs_and_visits_out() {
    let (w, store) = a_month();
    let owners = owners_report(&store, &w, at(1.5), at(28.0)).unwrap();
    let ana = &owners["ana@x.example"];
    assert_eq!((ana.handoffs_received, ana.handoffs_open), (1, 1));
    assert_eq!(ana.median_handoff_response_hours, None);
    let pipeline = &pipeline_report(&store, &w, at(1.5)).unwrap()[0];
    assert_eq!(pipeline.stages[0].1.entered, 0);
    assert_eq!(pipeline.stages[1].1.entered, 2);
}

#[test]
fn the_owner_a_visit_counts_for_is_the_one_its_event_leaves() {
    // A deal opened and routed by one event: the visit is Ana's, not unowned.
    let flows = r#"
team:
  people: [ { email: ana@x.example } ]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: qualified, exit_require: [budget] }
      - { name: proposal }
rules:
  - { name: route, for: deal, on: deal.opened, do: [ { assign: { owner: ana@x.example } } ] }
  - { name: early, for: deal, on: deal.rush, do: [ { move: proposal } ] }
"#;
    let w = crate::config::load_for_tests(flows);
    let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
    let events = vec![
        event(0.0, "deal.opened", "deal/D1", json!({})),
        event(2.0, "deal.rush", "deal/D1", json!({})),
    ];
    block_on(run_on(&store, &w, start(), events, at(3.0))).unwrap();
    let pipeline = &pipeline_report(&store, &w, start()).unwrap()[0];
    let ana = &pipeline.by_owner["ana@x.example"];
    assert_eq!(ana[0].1.entered, 1, "{:?}", pipeline.by_owner.keys());
    assert!(!pipeline.by_owner.contains_key(""), "no unowned visit");
    let q = pipeline.stage("qualified").unwrap();
    assert_eq!(q.refused_moves, 1);
    assert_eq!(
        q.most_blocking.as_deref(),
        Some("budget is required to leave qualified")
    );
}

/// Runs a simulation to its end on a runtime of this thread.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(f)
}
