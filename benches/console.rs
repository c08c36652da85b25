//! Console benchmark (issue 22): page render times on a fjall store with
//! 250,000 deals and 1,000,000 stage visits (the report benchmarks' data),
//! served by the release daemon over loopback: median and p99 per page,
//! bytes per page, the first view of the pipeline (figures built) and the
//! first view after a commit (last figures served, rebuilt behind), and the
//! fan-out of one change to 50 open live pages.
//!
//! Run: `cargo build --release && cargo bench --bench console`
//! (BENCH_VISITS changes the million).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[path = "support.rs"]
mod support;

use dealflow::store::{KvStore, Store};
use serde_json::json;
use std::time::{Duration, Instant};

const FLOWS: &str = r#"
team:
  people:
    - { email: ana@x.example }
    - { email: ben@x.example }
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: qualified }
      - { name: discovery }
      - { name: proposal }
      - { name: won, outcome: won }
      - { name: lost, outcome: lost }
rules:
  - name: call
    for: deal
    on: deal.opened
    do:
      - task: { title: "Call {{ deal.id }}", owner: ana@x.example }
"#;

#[tokio::main]
async fn main() {
    let visits: u64 = std::env::var("BENCH_VISITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let (flows, data) = (dir.path().join("flows"), dir.path().join("data"));
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::create_dir_all(data.join("store")).unwrap();
    std::fs::write(flows.join("flows.yaml"), FLOWS).unwrap();
    {
        let store = KvStore::open(
            dealflow::store::open_disk(
                &data.join("store"),
                dealflow::store::DEFAULT_CACHE_MIB << 20,
            )
            .unwrap(),
            "bench",
        )
        .unwrap();
        support::fill_stage_history(&store, visits);
        store.flush().await.unwrap();
    }
    let daemon = support::start(&flows, &data);
    let url = daemon.url.clone();
    let http = reqwest::Client::new();
    for i in 0..300 {
        let event = json!({ "type": "deal.opened", "record": { "kind": "deal", "id": format!("N{i}"), "fields": { "owner": "ben@x.example" } } });
        http.post(format!("{url}/v1/events"))
            .json(&event)
            .send()
            .await
            .unwrap();
    }
    support::wait_handled(&http, &url).await;

    let get = |path: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let t = Instant::now();
            let r = http.get(format!("{url}{path}")).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            let bytes = r.bytes().await.unwrap().len();
            (t.elapsed(), bytes)
        }
    };
    let (first, _) = get("/".into()).await;
    println!(
        "{visits} stage visits; the pipeline page's first view right after start (waits for the warm-up scan): {:.0} ms",
        ms(first)
    );
    for path in [
        "/",
        "/?owner=ana@x.example",
        "/stages/b2b/won",
        "/records/deal/N7",
        "/tasks?owner=ana@x.example",
        "/sequences",
        "/outbox",
        "/workflows",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..50 {
            let (t, b) = get(path.to_owned()).await;
            times.push(t);
            bytes = b;
        }
        times.sort();
        println!(
            "{path:<28} median {:>6.1} ms  p99 {:>6.1} ms  {:>7} bytes",
            ms(times[25]),
            ms(times[49]),
            bytes
        );
    }

    // A commit makes the figures stale: the next view gets the last ones at
    // once and a rebuild runs behind it.
    http.post(format!("{url}/v1/events"))
        .json(&json!({ "type": "deal.opened", "record": { "kind": "deal", "id": "late" } }))
        .send()
        .await
        .unwrap();
    support::wait_handled(&http, &url).await;
    let (stale, _) = get("/".into()).await;
    println!(
        "the pipeline page's first view after a commit (served from the last figures): {:.1} ms",
        ms(stale)
    );

    // Fan-out: 50 open live pages, one change.
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(http.get(format!("{url}/live")).send().await.unwrap());
    }
    let mut rounds = Vec::new();
    for round in 0..10 {
        let t = Instant::now();
        http.post(format!("{url}/v1/events"))
            .json(&json!({ "type": "deal.opened", "record": { "kind": "deal", "id": format!("F{round}") } }))
            .send()
            .await
            .unwrap();
        for stream in &mut streams {
            loop {
                let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
                    .await
                    .expect("a live event within 30 s")
                    .unwrap()
                    .unwrap();
                if String::from_utf8_lossy(&chunk).contains("event: changed") {
                    break;
                }
            }
        }
        rounds.push(t.elapsed());
        // Let a rebuild behind the pages ring (and be read) before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for stream in &mut streams {
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout(Duration::from_millis(5), stream.chunk())
                    .await
                    .map(|c| c.transpose())
            {}
        }
    }
    rounds.sort();
    println!(
        "one change reaching 50 open live pages: median {:.0} ms, max {:.0} ms (10 rounds; includes the 250 ms coalescing wait)",
        ms(rounds[5]),
        ms(rounds[9])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
