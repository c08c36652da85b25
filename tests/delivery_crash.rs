//! kill -9 while emails are being handed to a real SMTP server: after a
//! restart every email arrives, and no action ever produced two different
//! Message-IDs (a resend carries the same one).

mod common;

use common::sinks::SmtpSink;
use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const LEADS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_email_arrives_once_per_identity_across_kill_9() {
    let smtp = SmtpSink::start();
    let yaml = format!(
        r#"
settings:
  email: {{ transport: "{}", from: "Acme <sales@acme.example>" }}
rules:
  - name: welcome
    for: lead
    on: signed.up
    do: [ {{ email: {{ subject: "Welcome {{{{ lead.id }}}}", body: "Hello" }} }} ]
"#,
        smtp.url()
    );
    let (dir, flows) = workflow_dir(&yaml);
    let data = dir.path().join("data");
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let events: Vec<_> = (0..LEADS)
        .map(|i| json!({ "type": "signed.up", "record": { "kind": "lead", "id": format!("L{i}"), "fields": { "email": format!("p{i}@p.example") } } }))
        .collect();
    let (status, _) = post_json(&format!("{}/v1/events", daemon.url), json!(events)).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    eventually(30, "the first deliveries", || async {
        (smtp.received().len() >= 20).then_some(())
    })
    .await;
    daemon.kill();
    let before_restart = smtp.received().len();
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let url = daemon.url.clone();
    eventually(60, "every email", || async {
        let got: BTreeSet<String> = smtp.received().iter().flat_map(|r| r.to.clone()).collect();
        (got.len() == LEADS).then_some(())
    })
    .await;
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in smtp.received() {
        let id = r.header("Message-ID").unwrap();
        ids.entry(r.to[0].clone()).or_default().insert(id);
    }
    let two: Vec<_> = ids.iter().filter(|(_, set)| set.len() > 1).collect();
    assert!(two.is_empty(), "actions with two Message-IDs: {two:?}");
    let resent = smtp.received().len() - LEADS;
    eprintln!(
        "{before_restart} delivered before kill -9; {resent} handed over twice (same Message-ID)"
    );
    // The last batch's outcomes are recorded right after the server took it.
    eventually(10, "every row recorded as sent", || async {
        let sent = get_json(&format!("{url}/v1/outbox?status=sent&limit=500")).await;
        (sent["outbox"].as_array().map_or(0, |a| a.len()) == LEADS).then_some(())
    })
    .await;
}
