//! Operations benchmark (issue 24): a store of BENCH_RECORDS new records
//! (default 1,000,000) made by the release daemon through the workload of
//! the ingest benchmark; then, from a separate process as an admin would:
//! ingest rate without a backup, `dealflow backup` while the same ingest
//! runs (its time, its file size and the ingest rate meanwhile),
//! `dealflow restore` into a new folder, and `dealflow check` of it.
//!
//! Run: `cargo build --release && cargo bench --bench backup`

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[path = "workload.rs"]
mod workload;

#[path = "support.rs"]
mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{start, wait_handled};

fn binary() -> String {
    std::env::var("DEALFLOW_BIN").unwrap_or_else(|_| "target/release/dealflow".to_owned())
}

fn event(n: u64) -> Value {
    json!({ "id": format!("e{n}"), "type": "bench.event", "record": { "kind": "lead", "id": format!("L{n}"), "fields": { "email": format!("l{n}@p.example"), "n": n } } })
}

/// Posts batches of 100 from 4 clients until `stop`; answers events/s.
async fn ingest(url: String, next: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> f64 {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, url, next, stop, done) = (
            http.clone(),
            url.clone(),
            next.clone(),
            stop.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let first = next.fetch_add(100, Ordering::Relaxed);
                let batch: Vec<Value> = (first..first + 100).map(event).collect();
                let r = http
                    .post(format!("{url}/v1/events"))
                    .json(&batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                done.fetch_add(100, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn mib(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

#[tokio::main]
async fn main() {
    let records: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let flows = tmp.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    workload::write_workflows(&flows);
    let daemon = start(&flows, &tmp.path().join("data"));
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let filled = Instant::now();
    while next.load(Ordering::Relaxed) < records {
        let first = next.fetch_add(1000, Ordering::Relaxed);
        let batch: Vec<Value> = (first..first + 1000).map(event).collect();
        let r = http
            .post(format!("{}/v1/events", daemon.url))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    wait_handled(&http, &daemon.url).await;
    println!(
        "{records} records made and handled in {:.0} s",
        filled.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let quiet = tokio::spawn(ingest(daemon.url.clone(), next.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let alone = quiet.await.unwrap();
    wait_handled(&http, &daemon.url).await;

    let file = tmp.path().join("bench.backup");
    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(ingest(daemon.url.clone(), next.clone(), stop.clone()));
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["backup", "--url", &daemon.url, "--out"])
        .arg(&file)
        .output()
        .unwrap();
    let backup_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let with_backup = during.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "backup: {backup_s:.1} s, {:.0} MiB file (store {:.0} MiB on disk); ingest {alone:.0} events/s alone, {with_backup:.0} events/s during the backup ({:.2}x)",
        mib(&file),
        support::get_json(&http, &format!("{}/v1/status", daemon.url)).await["store_bytes"]
            .as_f64()
            .unwrap_or(0.0)
            / (1 << 20) as f64,
        with_backup / alone
    );
    drop(daemon);

    let restored = tmp.path().join("restored");
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["restore"])
        .arg(&file)
        .arg("--data")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("restore: {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["check", "--data"])
        .arg(&restored)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    println!(
        "check: {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        said.lines()
            .find(|l| l.contains("entries read"))
            .unwrap_or("")
    );
}
