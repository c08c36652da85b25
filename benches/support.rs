//! Shared by the benchmarks: starting the release daemon (build it first:
//! `cargo build --release`, or point DEALFLOW_BIN at a binary) and reading
//! this process's resident memory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(flows: &std::path::Path, data: &std::path::Path) -> Daemon {
    let binary =
        std::env::var("DEALFLOW_BIN").unwrap_or_else(|_| "target/release/dealflow".to_owned());
    let mut child = Command::new(binary)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--max-body",
            "8388608",
            "--workflows",
        ])
        .arg(flows)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("build the release binary first: cargo build --release");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .trim_start_matches("dealflow listening on ")
        .to_owned();
    Daemon { child, url }
}

/// This process's resident memory in MiB (Linux; 0 elsewhere).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// GETs a JSON answer from the daemon.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .expect("the daemon answers")
        .json()
        .await
        .expect("a JSON answer")
}

/// Waits until the daemon has handled every event it stored.
pub async fn wait_handled(http: &reqwest::Client, url: &str) {
    loop {
        let s = get_json(http, &format!("{url}/v1/status")).await;
        if s["events_handled"] == s["events_stored"] {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Writes `visits` stage visits of the report benchmarks' shape: deals of
/// pipeline `b2b` through qualified, discovery and proposal to won (a third)
/// or lost, four visits each, spread over 500 days from the answer (the
/// first day), owned by four reps, some stalled, some refused.
pub fn fill_stage_history(
    store: &dealflow::store::KvStore<dealflow::store::FjallBackend>,
    visits: u64,
) -> chrono::DateTime<chrono::Utc> {
    use chrono::Duration;
    use dealflow::state::Effects;
    use dealflow::state::{RecordKey, StageVisit};
    use dealflow::store::{Changes, Store};
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let stages = ["qualified", "discovery", "proposal", "won", "lost"];
    let owners = [
        "ana@x.example",
        "ben@x.example",
        "cy@x.example",
        "di@x.example",
    ];
    let mut batch = Vec::new();
    for deal in 0..visits / 4 {
        let key = RecordKey {
            kind: "deal".into(),
            id: format!("D{deal:07}"),
        };
        let end = if deal % 3 == 0 { 4 } else { 3 };
        for (i, stage) in [0usize, 1, 2, end].into_iter().enumerate() {
            let entered = start
                + Duration::hours((deal % 500) as i64 * 24 + i as i64 * 30 + (deal % 7) as i64);
            let refused = i == 0 && deal % 4 == 0;
            batch.push((
                key.clone(),
                i as u64,
                StageVisit {
                    pipeline: "b2b".into(),
                    stage: stages[stage].into(),
                    entered_at: entered,
                    exited_at: (i < 3).then(|| entered + Duration::hours(30)),
                    owner: Some(owners[(deal % 4) as usize].into()),
                    stalls: u32::from(deal % 5 == 0),
                    refused_moves: u32::from(refused),
                    refusals: if refused {
                        [("budget_range is required to leave qualified".to_owned(), 1)].into()
                    } else {
                        Default::default()
                    },
                },
            ));
        }
        if batch.len() >= 20_000 {
            store
                .commit(Changes::from(Effects {
                    stage_visits: std::mem::take(&mut batch),
                    ..Effects::default()
                }))
                .unwrap();
        }
    }
    store
        .commit(Changes::from(Effects {
            stage_visits: batch,
            ..Effects::default()
        }))
        .unwrap();
    start
}
