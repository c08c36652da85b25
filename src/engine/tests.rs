//! The engine on a small workflow set, with the in-memory store and a
//! fixed clock: what each action does, gating, failures and loops.

use crate::clock::{Clock, ManualClock};
use crate::config::{self, Workflows};
use crate::engine::MoveResult;
use crate::state::{NewEvent, RecordKey, TaskStatus};
use crate::store::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

const FLOWS: &str = r#"
team:
  people:
    - { email: ana@x.example, manager: lee@x.example }
    - { email: ben@x.example, manager: lee@x.example }
    - { email: lee@x.example }
  teams:
    sdr: [ana@x.example, ben@x.example]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: qualified, require: [icp_fit, pain], exit_require: [budget_range, decision_maker] }
      - name: discovery
        require: [dm_meeting_at]
        exit_require: [{ check: "deal.amount is defined and deal.amount > 0", message: "amount must be set" }]
      - name: proposal
      - { name: won, outcome: won, require: [contract_signed_at] }
      - { name: lost, outcome: lost, require: [lost_reason] }
sequences:
  - name: nurture
    for: lead
    steps:
      - { id: hello, email: { subject: "Hi", body: "Hello" } }
rules:
  - name: route
    for: lead
    on: form.submitted
    do:
      - assign: { team: sdr }
      - task: { title: "Call {{ lead.name | default(lead.email) }}", due: 1h }
      - enroll: nurture
  - name: balance
    for: lead
    on: import.done
    do:
      - assign: { team: sdr, strategy: least_loaded }
  - name: greet
    for: lead
    on: greet.me
    do:
      - email: { subject: "Hi {{ lead.first_name }}", body: "Welcome" }
      - set: { greeted: true }
  - name: independent
    for: lead
    on: greet.me
    do:
      - set: { seen_greet: "yes" }
  - name: ping
    for: lead
    on: ping
    do:
      - emit: { type: ping }
  - name: hand-to-sdr
    for: lead
    on: mql
    do:
      - handoff: { to: sdr, require: [email, company], note: "From {{ lead.company }}", task: "Qualify {{ lead.company }}" }
  - name: move-deal
    for: deal
    on: deal.advance
    do:
      - move: discovery
  - name: tell-crm
    for: lead
    on: crm.sync
    do:
      - webhook: { url: "https://crm.example/hook" }
"#;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T14:00:00Z")
        .unwrap()
        .to_utc()
}

fn workflows() -> Workflows {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flows.yaml"), FLOWS).unwrap();
    let (w, d) = config::load(dir.path(), &HashMap::new());
    w.unwrap_or_else(|| panic!("{d:#?}"))
}

struct Bench {
    store: KvStore<MemoryBackend>,
    workflows: Workflows,
    clock: ManualClock,
}

impl Bench {
    fn new() -> Self {
        Bench {
            store: KvStore::open(MemoryBackend::default(), "memory").unwrap(),
            workflows: workflows(),
            clock: ManualClock::new(start()),
        }
    }

    fn send(&self, event_type: &str, kind: &str, id: &str, fields: Json) {
        let fields: Map<String, Json> = fields.as_object().cloned().unwrap_or_default();
        let event = NewEvent {
            id: None,
            event_type: event_type.into(),
            record: key(kind, id),
            fields,
            data: Map::new(),
            occurred_at: self.clock.now(),
            depth: 0,
        };
        self.store.append_events(vec![event]).unwrap();
        block_on(crate::worker::drain(
            &self.store,
            &self.workflows,
            &self.clock,
        ))
        .unwrap();
    }

    fn record(&self, kind: &str, id: &str) -> crate::state::Record {
        self.store.record(&key(kind, id)).unwrap().unwrap()
    }

    fn event_types(&self) -> Vec<String> {
        self.store
            .events_after(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    fn runs(&self, rule: &str) -> Vec<crate::state::Run> {
        self.store
            .runs(
                &RunFilter {
                    rule: Some(rule.into()),
                    ..RunFilter::default()
                },
                None,
                100,
            )
            .unwrap()
            .items
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn key(kind: &str, id: &str) -> RecordKey {
    RecordKey {
        kind: kind.into(),
        id: id.into(),
    }
}

#[test]
fn a_new_lead_is_created_assigned_in_turn_tasked_and_enrolled() {
    let b = Bench::new();
    for id in ["L1", "L2", "L3"] {
        b.send(
            "form.submitted",
            "lead",
            id,
            json!({ "email": format!("{id}@p.example") }),
        );
    }
    let owners: Vec<Option<String>> = ["L1", "L2", "L3"]
        .iter()
        .map(|id| b.record("lead", id).owner)
        .collect();
    assert_eq!(
        owners,
        [
            Some("ana@x.example".into()),
            Some("ben@x.example".into()),
            Some("ana@x.example".into())
        ]
    );
    let tasks = b
        .store
        .tasks(&TaskFilter::default(), None, 10)
        .unwrap()
        .items;
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[0].title, "Call L1@p.example");
    assert_eq!(tasks[0].owner.as_deref(), Some("ana@x.example"));
    assert_eq!(tasks[0].due_at, Some(start() + chrono::Duration::hours(1)));
    assert_eq!(
        b.store.enrollments(&key("lead", "L1")).unwrap()[0]
            .next_step
            .as_deref(),
        Some("hello")
    );
    let types = b.event_types();
    assert_eq!(types.iter().filter(|t| *t == "record.created").count(), 3);
    assert_eq!(
        types.iter().filter(|t| *t == "sequence.enrolled").count(),
        3
    );
    assert_eq!(b.store.counter("round_robin/sdr").unwrap(), 3);
}

#[test]
fn least_loaded_picks_the_person_with_fewest_open_tasks() {
    let b = Bench::new();
    b.send(
        "form.submitted",
        "lead",
        "L1",
        json!({ "email": "a@p.example" }),
    ); // ana +1 task
    b.send("import.done", "lead", "L9", json!({}));
    assert_eq!(
        b.record("lead", "L9").owner.as_deref(),
        Some("ben@x.example")
    );
}

#[test]
fn a_failing_action_stops_its_run_reports_and_spares_other_rules() {
    let b = Bench::new();
    b.send(
        "greet.me",
        "lead",
        "L1",
        json!({ "email": "pat@p.example" }),
    );
    let run = &b.runs("greet")[0];
    assert_eq!(
        run.actions.len(),
        1,
        "set after the failed email must not run"
    );
    assert_eq!(run.actions[0].outcome, crate::state::Outcome::Failed);
    assert!(
        run.actions[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("undefined"),
        "{:?}",
        run.actions[0]
    );
    let record = b.record("lead", "L1");
    assert_eq!(record.fields.get("greeted"), None);
    assert_eq!(record.fields.get("seen_greet"), Some(&json!("yes")));
    assert!(b.event_types().contains(&"action.failed".to_owned()));
    assert!(
        b.store.outbox(None, 10).unwrap().items.is_empty(),
        "no email goes out as 'Hi '"
    );
}

#[test]
fn a_rule_loop_is_cut_and_reported() {
    let b = Bench::new();
    b.send("ping", "lead", "L1", json!({}));
    let pings = b.event_types().iter().filter(|t| *t == "ping").count();
    assert_eq!(pings as u32, crate::engine::MAX_CHAIN_DEPTH + 2);
    let cut = b
        .store
        .runs(&RunFilter::default(), None, 1000)
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.error.as_deref().is_some_and(|e| e.contains("chain")))
        .count();
    assert_eq!(cut, 1);
}

#[test]
fn a_handoff_without_context_is_refused_with_the_missing_fields() {
    let b = Bench::new();
    b.send("mql", "lead", "L1", json!({ "email": "a@p.example" }));
    let run = &b.runs("hand-to-sdr")[0];
    assert_eq!(run.actions[0].outcome, crate::state::Outcome::Refused);
    assert_eq!(run.actions[0].detail.as_deref(), Some("missing company"));
    let rejected = b
        .store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "handoff.rejected")
        .unwrap();
    assert_eq!(rejected.data["missing"], json!(["company"]));
    assert_eq!(b.record("lead", "L1").owner, None);
}

#[test]
fn a_handoff_with_context_changes_owner_and_queues_the_receivers_task() {
    let b = Bench::new();
    b.send(
        "mql",
        "lead",
        "L1",
        json!({ "email": "a@p.example", "company": "Kim Co", "owner": "lee@x.example" }),
    );
    assert_eq!(
        b.record("lead", "L1").owner.as_deref(),
        Some("ana@x.example")
    );
    let task = &b
        .store
        .tasks(&TaskFilter::default(), None, 10)
        .unwrap()
        .items[0];
    assert_eq!(
        (task.title.as_str(), task.notes.as_deref()),
        ("Qualify Kim Co", Some("From Kim Co"))
    );
    let done = b
        .store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "handoff.completed")
        .unwrap();
    assert_eq!(
        (done.data["from"].clone(), done.data["to"].clone()),
        (json!("lee@x.example"), json!("ana@x.example"))
    );
}

#[test]
fn a_deal_enters_its_first_stage_when_the_entry_facts_are_there() {
    let b = Bench::new();
    b.send("deal.opened", "deal", "D1", json!({ "icp_fit": "strong" }));
    assert_eq!(b.record("deal", "D1").stage, None);
    b.send(
        "deal.updated",
        "deal",
        "D1",
        json!({ "pain": "manual reports" }),
    );
    let record = b.record("deal", "D1");
    assert_eq!(record.stage.as_deref(), Some("qualified"));
    assert_eq!(record.stage_entered_at, Some(start()));
    let changed = b
        .store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "stage.changed")
        .unwrap();
    assert_eq!(changed.data["from"], Json::Null);
}

fn move_deal(b: &Bench, to: &str) -> MoveResult {
    let request = crate::state::Event {
        seq: 0,
        id: "m".into(),
        event_type: "stage.move_requested".into(),
        record: key("deal", "D1"),
        fields: Map::new(),
        data: Map::new(),
        occurred_at: start(),
        depth: 0,
    };
    let (result, changes) = crate::engine::move_stage(
        &key("deal", "D1"),
        to,
        &request,
        &b.workflows,
        &b.store,
        b.clock.now(),
    )
    .unwrap();
    b.store
        .commit(crate::store::Changes::from(changes))
        .unwrap();
    result
}

#[test]
fn a_gated_move_lists_every_unmet_requirement_and_changes_nothing() {
    let b = Bench::new();
    b.send(
        "deal.opened",
        "deal",
        "D1",
        json!({ "icp_fit": "strong", "pain": "x" }),
    );
    let before = b.record("deal", "D1");
    let MoveResult::Refused(unmet) = move_deal(&b, "proposal") else {
        panic!("must refuse")
    };
    assert_eq!(
        unmet,
        [
            "budget_range is required to leave qualified",
            "decision_maker is required to leave qualified",
            "dm_meeting_at is required to enter discovery",
            "amount must be set",
        ]
    );
    assert_eq!(b.record("deal", "D1"), before);
    assert!(b.event_types().contains(&"stage.rejected".to_owned()));
    // The refusal is kept on the visit for the pipeline report.
    move_deal(&b, "proposal");
    let history = b.store.stage_history(&key("deal", "D1")).unwrap();
    assert_eq!(history[0].refused_moves, 2);
    assert_eq!(history[0].refusals["amount must be set"], 2);
    assert_eq!(history[0].refusals.len(), 4);
}

#[test]
fn a_move_to_a_stage_that_does_not_exist_is_refused_but_blocks_nothing() {
    let b = Bench::new();
    b.send(
        "deal.opened",
        "deal",
        "D1",
        json!({ "icp_fit": "strong", "pain": "x" }),
    );
    let MoveResult::Refused(unmet) = move_deal(&b, "proposl") else {
        panic!("must refuse")
    };
    assert!(unmet[0].contains("\"proposl\" is not a stage"), "{unmet:?}");
    assert!(b.event_types().contains(&"stage.rejected".to_owned()));
    // Nothing about the stage the deal is in: reports must not count it.
    let history = b.store.stage_history(&key("deal", "D1")).unwrap();
    assert_eq!(history[0].refused_moves, 0);
    assert!(history[0].refusals.is_empty());
}

#[test]
fn moves_follow_the_pipeline_outcomes_and_backward_rules() {
    let b = Bench::new();
    b.send("deal.opened", "deal", "D1", json!({ "icp_fit": "strong", "pain": "x", "budget_range": "50k", "decision_maker": "CFO", "dm_meeting_at": "2026-03-05" }));
    b.clock.advance(chrono::Duration::days(3));
    assert_eq!(
        move_deal(&b, "discovery"),
        MoveResult::Moved {
            from: Some("qualified".into()),
            to: "discovery".into()
        }
    );
    assert!(
        matches!(move_deal(&b, "qualified"), MoveResult::Refused(u) if u[0].contains("does not allow moving back"))
    );
    assert!(
        matches!(move_deal(&b, "won"), MoveResult::Refused(u) if u == ["contract_signed_at is required to enter won"])
    );
    assert!(
        matches!(move_deal(&b, "nowhere"), MoveResult::Refused(u) if u[0].contains("not a stage"))
    );
    let history = b.store.stage_history(&key("deal", "D1")).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].exited_at,
        Some(start() + chrono::Duration::days(3))
    );
    let changed: Vec<_> = b
        .store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "stage.changed")
        .collect();
    assert_eq!(changed[1].data["days_in_previous"], json!(3));
}

#[test]
fn a_move_action_in_a_rule_is_gated_too() {
    let b = Bench::new();
    b.send(
        "deal.advance",
        "deal",
        "D1",
        json!({ "icp_fit": "strong", "pain": "x" }),
    );
    let run = &b.runs("move-deal")[0];
    assert_eq!(run.actions[0].outcome, crate::state::Outcome::Refused);
    assert_eq!(b.record("deal", "D1").stage.as_deref(), Some("qualified"));
}

#[test]
fn completing_a_task_through_its_event_closes_it() {
    let b = Bench::new();
    b.send(
        "form.submitted",
        "lead",
        "L1",
        json!({ "email": "a@p.example" }),
    );
    let task = b
        .store
        .tasks(&TaskFilter::default(), None, 1)
        .unwrap()
        .items
        .remove(0);
    let event = NewEvent {
        id: None,
        event_type: "task.completed".into(),
        record: key("lead", "L1"),
        fields: Map::new(),
        data: Map::from_iter([("task_id".to_owned(), json!(task.id))]),
        occurred_at: start(),
        depth: 0,
    };
    b.store.append_events(vec![event]).unwrap();
    block_on(crate::worker::drain(&b.store, &b.workflows, &b.clock)).unwrap();
    assert_eq!(
        b.store.task(&task.id).unwrap().unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(b.store.open_task_count("ana@x.example").unwrap(), 0);
}

#[test]
fn only_events_that_touch_a_sequence_read_the_enrollments() {
    let b = Bench::new();
    // L1's enrollments cannot be read: any event that reads them fails.
    b.store.spoil_enrollment(&key("lead", "L1"), "nurture");
    let handle = |event_type: &str| {
        let event = crate::state::Event {
            seq: 1,
            id: "e1".into(),
            event_type: event_type.into(),
            record: key("lead", "L1"),
            fields: Map::from_iter([("email".to_owned(), json!("pat@y.example"))]),
            data: Map::new(),
            occurred_at: start(),
            depth: 0,
        };
        crate::engine::handle(&event, &b.workflows, &b.store, start())
    };
    // Two rules run on greet.me; neither enrolls, and no sequence exits on it.
    let greeted = handle("greet.me").expect("greet.me never reads enrollments");
    assert_eq!(greeted.runs.len(), 2);
    // A reply ends nurture (its default exit_on), so it must read them; so
    // must `route`, which enrolls.
    for touches in ["email.replied", "form.submitted"] {
        let failed = handle(touches).expect_err(touches);
        assert!(failed.to_string().contains("cannot be decoded"), "{failed}");
    }
}

#[test]
fn a_webhook_without_a_body_sends_the_event_the_record_and_the_rule() {
    let b = Bench::new();
    b.send(
        "crm.sync",
        "lead",
        "L1",
        json!({ "email": "pat@p.example" }),
    );
    let rows = b.store.outbox(None, 10).unwrap().items;
    let [row] = &rows[..] else { panic!("{rows:?}") };
    let crate::state::Delivery::Webhook { body, .. } = &row.delivery else {
        panic!("{row:?}")
    };
    // Sent with its keys in order, as when the body was built as a map.
    let text = body.as_str();
    assert!(text.starts_with(r#"{"event":{"#), "{text}");
    assert!(text.ends_with(r#","rule":"tell-crm"}"#), "{text}");
    let body = body.to_json();
    assert_eq!(body["event"]["type"], "crm.sync", "{body}");
    assert_eq!(body["record"]["id"], "L1", "{body}");
    assert_eq!(body["record"]["email"], "pat@p.example", "{body}");
}
