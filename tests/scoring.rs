//! Scoring with the real daemon: points accumulate, the threshold hands the
//! lead off once, decay re-arms it, a handoff missing context is refused
//! naming the fields, and the record view explains the score.

mod common;

use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::{Value, json};
use std::time::Duration;

const FLOWS: &str = r#"
team:
  people: [ { email: ana@x.example }, { email: ben@x.example } ]
  teams: { sdr: [ana@x.example, ben@x.example] }
scoring:
  - name: intent
    for: lead
    rules:
      - { name: visit, on: page.viewed, points: 30 }
      - { name: senior, when: "lead.title is defined and 'VP' in lead.title", points: 5 }
    decay: { half_life: 1s }
    thresholds:
      - name: hot
        at: 60
        do:
          - handoff: { to: sdr, require: [email, company], note: "Score {{ lead.score }}" }
"#;

async fn view(url: &str, id: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{url}/v1/records/lead/{id}"))
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

use reqwest::StatusCode;

/// Page views, one per entry of `fields`, sent as one batch: handled
/// together, so a loaded machine cannot spread them over enough of the
/// one-second half-life to keep the score under a threshold.
async fn visits(url: &str, id: &str, fields: &[Value]) {
    let events: Vec<Value> = fields
        .iter()
        .map(|f| json!({ "type": "page.viewed", "record": { "kind": "lead", "id": id, "fields": f } }))
        .collect();
    let (status, body) = post_json(&format!("{url}/v1/events"), json!(events)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn handoffs(url: &str, id: &str) -> usize {
    let runs = get_json(&format!(
        "{url}/v1/runs?record=lead/{id}&rule=scoring:intent/hot"
    ))
    .await;
    runs["runs"].as_array().map_or(0, |r| r.len())
}

#[tokio::test]
async fn a_threshold_fires_once_and_again_after_decay() {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    let fields = json!({ "email": "pat@p.example", "company": "P Co", "title": "VP Sales" });
    // 5 (title) + 30 + 30 = 65: crosses 60; a third visit at 95 does not again.
    visits(&url, "L1", &[fields.clone(), fields.clone(), fields]).await;
    eventually(5, "the first handoff", || async {
        (handoffs(&url, "L1").await == 1).then_some(())
    })
    .await;
    let (_, record) = view(&url, "L1").await;
    assert!(record["record"]["owner"].is_string(), "{record}");
    let intent = &record["scores"]["intent"];
    let parts: Vec<String> = intent["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(parts, ["senior", "visit"], "{intent}");
    assert_eq!(intent["ledger"].as_array().unwrap().len(), 4, "{intent}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        handoffs(&url, "L1").await,
        1,
        "no second handoff on further points"
    );

    // Four half-lives later 90 event points are under 6: 5 + 6 < 60. Two
    // visits bring it back over 60: the threshold fires again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    visits(&url, "L1", &[json!({}), json!({})]).await;
    eventually(5, "the second handoff", || async {
        (handoffs(&url, "L1").await == 2).then_some(())
    })
    .await;
    let ledger = get_json(&format!(
        "{url}/v1/records/lead/L1/ledger?model=intent&limit=2"
    ))
    .await;
    assert_eq!(ledger["ledger"][0]["rule"], "visit", "{ledger}");
    assert!(ledger["next"].is_string(), "{ledger}");
}

#[tokio::test]
async fn a_handoff_without_context_is_refused_naming_the_fields() {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    // Three quick visits: 90 points, less a little decay between them.
    let email = json!({ "email": "x@p.example" });
    visits(&url, "L2", &[email, json!({}), json!({})]).await;
    let run = eventually(5, "the refused handoff", || async {
        let runs = get_json(&format!(
            "{url}/v1/runs?record=lead/L2&rule=scoring:intent/hot"
        ))
        .await;
        runs["runs"].as_array().and_then(|r| r.first().cloned())
    })
    .await;
    assert_eq!(run["actions"][0]["outcome"], "refused", "{run}");
    assert_eq!(run["actions"][0]["detail"], "missing company", "{run}");
    let (_, record) = view(&url, "L2").await;
    assert!(
        record["record"]["owner"].is_null(),
        "nobody received it: {record}"
    );
}

/// A model without decay, so every score below is exact.
fn fit_model(rules: &[&str]) -> String {
    let rules: String = rules.iter().map(|r| format!("      - {r}\n")).collect();
    format!("scoring:\n  - name: fit\n    for: lead\n    rules:\n{rules}")
}

async fn send(url: &str, id: &str, event_type: &str) {
    let event = json!({ "type": event_type, "record": { "kind": "lead", "id": id } });
    let (status, body) = post_json(&format!("{url}/v1/events"), event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// The record's `fit` parts as (rule, points) once its score is `score`.
async fn fit_parts(url: &str, id: &str, score: f64) -> Vec<(String, f64)> {
    let fit = eventually(5, &format!("a fit score of {score}"), || async {
        let (_, record) = view(url, id).await;
        let fit = record["scores"]["fit"].clone();
        (fit["score"] == json!(score)).then_some(fit)
    })
    .await;
    let parts = fit["parts"].as_array().cloned().unwrap_or_default();
    parts
        .iter()
        .map(|p| {
            (
                p["rule"].as_str().unwrap_or_default().to_owned(),
                p["points"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_reload_that_reorders_and_adds_rules_keeps_each_rules_points() {
    let visit = "{ name: visit, on: page.viewed, points: 10 }";
    let form = "{ name: form, on: form.submitted, points: 20 }";
    let demo = "{ name: demo, on: demo.booked, points: 50 }";
    let (dir, flows) = workflow_dir(&fit_model(&[visit, form]));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    send(&url, "L1", "page.viewed").await;
    send(&url, "L1", "form.submitted").await;
    let parts = [("form".to_owned(), 20.0), ("visit".to_owned(), 10.0)];
    assert_eq!(fit_parts(&url, "L1", 30.0).await, parts);

    // The stored record keeps its parts laid out by the old rules; the new
    // rules put a rule first and swap the others.
    let before = get_json(&format!("{url}/v1/status")).await["version"].clone();
    std::fs::write(flows.join("flows.yaml"), fit_model(&[demo, form, visit])).unwrap();
    // The watcher may reload the saved file before this request does: then
    // the answer is `changed: false`, with the new version either way.
    let (status, body) = post_json(&format!("{url}/v1/reload"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["version"], before, "{body}");
    send(&url, "L1", "page.viewed").await;
    let parts = [("form".to_owned(), 20.0), ("visit".to_owned(), 20.0)];
    assert_eq!(fit_parts(&url, "L1", 40.0).await, parts);
    send(&url, "L1", "demo.booked").await;
    let parts = [
        ("demo".to_owned(), 50.0),
        ("form".to_owned(), 20.0),
        ("visit".to_owned(), 20.0),
    ];
    assert_eq!(fit_parts(&url, "L1", 90.0).await, parts);
}
