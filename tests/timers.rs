//! Time with the real daemon: second-scale waits and stalls fire on their
//! own, and timers that came due while the daemon was down fire once.

mod common;

use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::{Value, json};
use std::time::Duration;

const FLOWS: &str = r#"
team:
  people: [ { email: ana@x.example } ]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: open, stall_after: 3s }
      - { name: won, outcome: won }
sequences:
  - name: quick
    for: lead
    steps:
      - { id: first, task: { title: "first {{ lead.id }}", owner: ana@x.example } }
      - wait: 2s
      - { id: second, task: { title: "second {{ lead.id }}", owner: ana@x.example } }
rules:
  - name: start
    for: lead
    on: signed.up
    do: [ { enroll: quick } ]
  - name: nudge
    for: deal
    on: stage.stalled
    do: [ { task: { title: "stalled {{ deal.id }} {{ event.days_in_stage }}d", owner: ana@x.example } } ]
"#;

async fn send(url: &str, event_type: &str, kind: &str, id: &str) {
    let event = json!({ "type": event_type, "record": { "kind": kind, "id": id } });
    let (status, body) = post_json(&format!("{url}/v1/events"), event).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_two_second_wait_and_a_three_second_stall_fire_by_themselves() {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    send(&url, "signed.up", "lead", "L1").await;
    send(&url, "deal.opened", "deal", "D1").await;
    eventually(5, "the first step", || async {
        common::task_titles(&url, "open")
            .await
            .contains(&"first L1".to_owned())
            .then_some(())
    })
    .await;
    let record = get_json(&format!("{url}/v1/records/lead/L1")).await;
    let enrollment = &record["enrollments"][0];
    assert_eq!(enrollment["status"], "active");
    assert_eq!(enrollment["next_step"], "second");
    eventually(10, "the step after the wait", || async {
        common::task_titles(&url, "open")
            .await
            .contains(&"second L1".to_owned())
            .then_some(())
    })
    .await;
    eventually(10, "the stall", || async {
        common::task_titles(&url, "open")
            .await
            .contains(&"stalled D1 0d".to_owned())
            .then_some(())
    })
    .await;
    let record = get_json(&format!("{url}/v1/records/lead/L1")).await;
    assert_eq!(record["enrollments"][0]["status"], "completed");
}

#[tokio::test]
async fn timers_due_while_the_daemon_was_down_fire_once_after_restart() {
    let (dir, flows) = workflow_dir(FLOWS);
    let data = dir.path().join("data");
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let url = daemon.url.clone();
    for i in 0..5 {
        send(&url, "signed.up", "lead", &format!("L{i}")).await;
    }
    send(&url, "deal.opened", "deal", "D1").await;
    eventually(5, "every first step", || async {
        (common::task_titles(&url, "open").await.len() == 5).then_some(())
    })
    .await;
    // kill -9 with every wait and the stall pending; restart after they came due.
    daemon.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let url = daemon.url.clone();
    let all: Vec<String> = eventually(10, "the missed timers", || async {
        let t = common::task_titles(&url, "open").await;
        (t.len() >= 11).then_some(t)
    })
    .await;
    // Give any duplicate the time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut all_after = common::task_titles(&url, "open").await;
    all_after.sort();
    let mut expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("first L{i}"), format!("second L{i}")])
        .chain(["stalled D1 0d".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(all_after, expected, "first seen: {all:?}");
    let status: Value = get_json(&format!("{url}/v1/status")).await;
    assert_eq!(status["events_handled"], status["events_stored"]);
}
