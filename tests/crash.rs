//! Kill -9 under load: every event answered 202 is handled exactly once.
//! Clients post events concurrently; the daemon is killed mid-load several
//! times and restarted on the same data; at the end each acknowledged event
//! has produced exactly one task, and no event produced two.

mod common;

use common::{Daemon, workflow_dir};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FLOWS: &str = r#"
rules:
  - name: one-task-per-event
    for: lead
    on: crash.test
    do:
      - task: { title: "{{ event.id }}" }
"#;

const ROUNDS: usize = 4;
const CLIENTS: usize = 16;

async fn load(url: String, round: usize, acknowledged: Arc<Mutex<HashSet<String>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, acknowledged) = (http.clone(), url.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("r{round}-c{c}-{n}");
                let event = json!({ "id": id, "type": "crash.test", "record": { "kind": "lead", "id": format!("L{}", n % 7) } });
                match http.post(format!("{url}/v1/events")).json(&event).send().await {
                    Ok(r) if r.status() == 202 => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    _ => return,
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
}

async fn all_task_titles(url: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut titles = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = http.get(format!("{url}/v1/tasks?status=all&limit=500"));
        if let Some(a) = &after {
            request = request.query(&[("after", a)]);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        for t in page["tasks"].as_array().unwrap() {
            titles.push(t["title"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return titles,
        }
    }
}

async fn settle(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..3000 {
        let s: Value = http
            .get(format!("{url}/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["events_handled"] == s["events_stored"] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the daemon did not catch up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_handled_exactly_once_across_kill_9() {
    let (dir, flows) = workflow_dir(FLOWS);
    let data = dir.path().join("data");
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    for round in 0..ROUNDS {
        let daemon = Daemon::start(&flows, &data, &[], &[]);
        let load = tokio::spawn(load(daemon.url.clone(), round, acknowledged.clone()));
        tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
        daemon.kill();
        let _ = load.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "the load must have been real: {} events acknowledged",
        acknowledged.len()
    );

    let daemon = Daemon::start(&flows, &data, &[], &[]);
    // Sending acknowledged events again must change nothing.
    let http = reqwest::Client::new();
    for id in acknowledged.iter().take(20) {
        let event =
            json!({ "id": id, "type": "crash.test", "record": { "kind": "lead", "id": "L0" } });
        let r: Value = http
            .post(format!("{}/v1/events", daemon.url))
            .json(&event)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["duplicate"], true, "{id} was acknowledged before");
    }
    settle(&daemon.url).await;
    let titles = all_task_titles(&daemon.url).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &titles {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events handled twice: {twice:?}");
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "crash test: {} acknowledged, {} tasks, {} rounds of kill -9",
        acknowledged.len(),
        titles.len(),
        ROUNDS
    );
}
