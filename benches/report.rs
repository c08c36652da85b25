//! Report benchmark (issue 8): the pipeline report over 1,000,000 stored
//! stage-history rows (250,000 deals × 4 visits, fjall): wall time and memory.
//!
//! Run: `cargo bench --bench report` (BENCH_VISITS changes the million).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[path = "support.rs"]
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use dealflow::config;
use dealflow::store::{KvStore, StageHistoryTable, Store};
use std::collections::HashMap;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("p.yaml"),
        "pipelines:\n  - name: b2b\n    for: deal\n    stages:\n      - { name: qualified }\n      - { name: discovery }\n      - { name: proposal }\n      - { name: won, outcome: won }\n      - { name: lost, outcome: lost }\n",
    )
    .unwrap();
    let (w, d) = config::load(flows.path(), &HashMap::<String, String>::new());
    let workflows = w.unwrap_or_else(|| panic!("{d:?}"));
    let visits: u64 = std::env::var("BENCH_VISITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let data = tempfile::tempdir().unwrap();
    let store = KvStore::open(
        dealflow::store::open_disk(data.path(), dealflow::store::DEFAULT_CACHE_MIB << 20).unwrap(),
        "bench",
    )
    .unwrap();
    let start = support::fill_stage_history(&store, visits);
    store.flush().await.unwrap();
    let t = Instant::now();
    let mut rows = 0;
    store
        .each_stage_history(&mut |_, v| rows += v.len())
        .unwrap();
    println!(
        "reading and decoding the {rows} visits alone: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let before = support::rss_mib();
    let mut times = Vec::new();
    let mut last = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        last = dealflow::report::pipeline_report(&store, &workflows, start).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let r = &last[0];
    println!(
        "pipeline report over {visits} stage visits: median {:.2} s (min {:.2}, max {:.2}, 5 runs); RSS {before:.0} MiB before, {:.0} MiB after; qualified entered {}, won {}, lost {}",
        times[2],
        times[0],
        times[4],
        support::rss_mib(),
        r.stages[0].1.entered,
        r.won,
        r.lost
    );
}
