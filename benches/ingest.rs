//! Ingest benchmark (issue: engine). Starts the release daemon on loopback
//! with 100 rules and a store in a temp dir, then measures from a
//! separate process on the same machine:
//! 1. events/s for single-event requests at concurrency 32;
//! 2. events/s for batches of 100;
//! 3. p50/p99 latency at a steady 2,000 events/s;
//! 4. daemon RSS after 1,000,000 records (set BENCH_RECORDS to change).
//!
//! Every event is durable (flushed) before its 202.
//!
//! Run: `cargo build --release && cargo bench --bench ingest`

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "workload.rs"]
mod workload;

#[path = "support.rs"]
mod support;

use support::{get_json, start, wait_handled};

fn event(n: u64, record: u64) -> Value {
    json!({ "id": format!("e{n}"), "type": "bench.event", "record": { "kind": "lead", "id": format!("L{record}"), "fields": { "email": format!("l{record}@p.example"), "n": n } } })
}

/// Runs `clients` loops for `secs`, each posting what `body(n)` gives; answers events/s.
async fn throughput(
    url: &str,
    clients: usize,
    secs: u64,
    per_request: u64,
    next: Arc<AtomicU64>,
) -> f64 {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, next, done) = (http.clone(), url.to_owned(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let first = next.fetch_add(per_request, Ordering::Relaxed);
                let body = if per_request == 1 {
                    event(first, first % 5000)
                } else {
                    Value::Array(
                        (first..first + per_request)
                            .map(|n| event(n, n % 5000))
                            .collect(),
                    )
                };
                let r = http
                    .post(format!("{url}/v1/events"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                done.fetch_add(per_request, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn latency_at(url: &str, rate: u64, secs: u64, next: Arc<AtomicU64>) -> (f64, f64, usize) {
    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        ticker.tick().await;
        let (http, url) = (http.clone(), url.to_owned());
        let n = next.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .post(format!("{url}/v1/events"))
                .json(&event(n, n % 5000))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            t.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut ms = Vec::new();
    for t in tasks {
        ms.push(t.await.unwrap());
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 99 / 100], ms.len())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let flows = tmp.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    workload::write_workflows(&flows);
    let daemon = start(&flows, &tmp.path().join("data"));
    let next = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    let single = throughput(&daemon.url, 32, secs, 1, next.clone()).await;
    println!("single-event requests, concurrency 32: {single:.0} events/s");
    wait_handled(&http, &daemon.url).await;
    let batched = throughput(&daemon.url, 8, secs, 100, next.clone()).await;
    println!("batches of 100, concurrency 8: {batched:.0} events/s");
    wait_handled(&http, &daemon.url).await;
    let (p50, p99, n) = latency_at(&daemon.url, 2000, secs, next.clone()).await;
    println!("latency at 2,000 events/s ({n} requests): p50 {p50:.2} ms, p99 {p99:.2} ms");
    wait_handled(&http, &daemon.url).await;

    let records: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let start = Instant::now();
    let mut n = 10_000_000u64;
    let mut sent = 0;
    while sent < records {
        let batch: Vec<Value> = (0..1000).map(|i| event(n + i, n + i)).collect();
        n += 1000;
        sent += 1000;
        let r = http
            .post(format!("{}/v1/events", daemon.url))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    wait_handled(&http, &daemon.url).await;
    let status = get_json(&http, &format!("{}/v1/status", daemon.url)).await;
    println!(
        "{records} new records ingested and handled in {:.1} s; daemon RSS {} MiB; store {} MiB",
        start.elapsed().as_secs_f64(),
        rss_kib(daemon.child.id()) / 1024,
        status["store_bytes"].as_u64().unwrap_or(0) / (1 << 20)
    );
}
