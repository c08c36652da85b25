//! Canary secrets: values from the environment and tokens never appear on
//! any surface a person or a log collector reads (SPEC §3 Secrets, §7).

mod common;

use common::sinks::HttpSink;
use common::{Daemon, eventually, workflow_dir};
use serde_json::json;
use std::process::Command;

const CANARY: &str = "canary-hook-3f9a1c7e5d";
const API_TOKEN: &str = "canary-api-token-77aa19";

fn flows(sink: &str) -> String {
    format!(
        r#"
settings:
  webhooks:
    allow_hosts: ["127.0.0.1"]
  retry: {{ first: 1s, max_delay: 1s, attempts: 2 }}
rules:
  - name: to-crm
    for: lead
    on: signed.up
    do:
      - webhook:
          url: "{sink}/hooks/${{CANARY_HOOK_TOKEN}}"
          headers: {{ Authorization: "Bearer ${{CANARY_HOOK_TOKEN}}" }}
          body: {{ key: "${{CANARY_HOOK_TOKEN}}", lead: "{{{{ lead.id }}}}" }}
      - webhook: {{ url: "http://127.0.0.1:9/dead/${{CANARY_HOOK_TOKEN}}" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_api_the_logs_or_simulate() {
    let sink = HttpSink::start(1).await;
    let (dir, flows_dir) = workflow_dir(&flows(&sink.url));
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dealflow"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(&flows_dir)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("CANARY_HOOK_TOKEN", CANARY)
        .env("DEALFLOW_TOKEN", API_TOKEN)
        .env("RUST_LOG", "debug")
        .stderr(log);
    let daemon = Daemon::spawn(command);
    let url = daemon.url.clone();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            http.get(path)
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let event = json!({ "type": "signed.up", "record": { "kind": "lead", "id": "L1" } });
    let accepted = http
        .post(format!("{url}/v1/events"))
        .bearer_auth(API_TOKEN)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    // The sink got the real secret; the dead host gave up after two tries.
    eventually(20, "the webhook delivered and the other dead", || async {
        let outbox = get(format!("{url}/v1/outbox?record=lead/L1")).await;
        let done = outbox.contains("\"sent\"") && outbox.contains("\"dead\"");
        (done && sink.hits().len() >= 2).then_some(())
    })
    .await;
    assert!(
        sink.hits()[1]
            .header("authorization")
            .unwrap()
            .contains(CANARY)
    );
    // Tokens in paths and queries, which must not be logged either.
    let _ = http
        .post(format!("{url}/v1/inbound/email?token={API_TOKEN}"))
        .body("Subject: hi\r\n\r\nhello\r\n")
        .send()
        .await
        .unwrap();
    let _ = http
        .get(format!("{url}/u/{CANARY}-unsub"))
        .send()
        .await
        .unwrap();

    let mut surfaces = vec![
        ("outbox", get(format!("{url}/v1/outbox")).await),
        ("runs", get(format!("{url}/v1/runs")).await),
        ("record", get(format!("{url}/v1/records/lead/L1")).await),
        ("status", get(format!("{url}/v1/status")).await),
        ("metrics", get(format!("{url}/metrics")).await),
    ];
    assert!(surfaces[0].1.contains("/hooks/***"), "{}", surfaces[0].1);
    daemon.kill();
    surfaces.push(("log", std::fs::read_to_string(&log_path).unwrap()));

    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, event.to_string()).unwrap();
    let simulate = Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["simulate", "--format", "json", "--workflows"])
        .arg(&flows_dir)
        .arg("--events")
        .arg(&events)
        .env("CANARY_HOOK_TOKEN", CANARY)
        .output()
        .unwrap();
    let simulated = String::from_utf8_lossy(&simulate.stdout).into_owned();
    assert!(simulated.contains("/hooks/***"), "{simulated}");
    surfaces.push(("simulate", simulated));
    for (name, text) in &surfaces {
        assert!(!text.contains(CANARY), "{name} shows the secret:\n{text}");
        assert!(
            !text.contains(API_TOKEN),
            "{name} shows the API token:\n{text}"
        );
    }
}
