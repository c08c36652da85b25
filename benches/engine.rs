//! Engine benchmark: events handled per second by the worker loop (engine +
//! one atomic commit and one flush per round of events), with the ingest
//! workload's 100 rules, on the in-memory store and on disk (fjall).
//!
//! Run: `cargo bench --bench engine`

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

use dealflow::clock::SystemClock;
use dealflow::config;
use dealflow::state::{NewEvent, RecordKey};
use dealflow::store::{KvStore, MemoryBackend, Store};
use serde_json::{Map, json};
use std::collections::HashMap;
use std::time::Instant;

#[path = "workload.rs"]
mod workload;

// The daemon's allocator (src/main.rs), so the engine is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let fields: Map<String, serde_json::Value> =
                json!({ "email": format!("l{}@p.example", i % 5000), "n": i })
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
            NewEvent {
                id: Some(format!("e{i}")),
                event_type: "bench.event".into(),
                record: RecordKey {
                    kind: "lead".into(),
                    id: format!("L{}", i % 5000),
                },
                fields,
                data: Map::new(),
                occurred_at: chrono::DateTime::UNIX_EPOCH,
                depth: 0,
            }
        })
        .collect()
}

async fn measure<S: Store>(name: &str, store: S, workflows: &config::Workflows, n: u64) {
    for chunk in events(n).chunks(1000) {
        store.append_events(chunk.to_vec()).unwrap();
    }
    let start = Instant::now();
    let handled = dealflow::worker::drain(&store, workflows, &SystemClock)
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {n} ingested events → {handled} handled (with raised events) in {secs:.2} s = {:.0} ingested/s, {:.0} handled/s",
        n as f64 / secs,
        handled as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    workload::write_workflows(dir.path());
    let (workflows, diagnostics) = config::load(dir.path(), &HashMap::<String, String>::new());
    let workflows = workflows.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let n = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    measure(
        "memory",
        KvStore::open(MemoryBackend::default(), "memory").unwrap(),
        &workflows,
        n,
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    measure(
        "fjall",
        KvStore::open(
            dealflow::store::open_disk(data.path(), dealflow::store::DEFAULT_CACHE_MIB << 20)
                .unwrap(),
            "bench",
        )
        .unwrap(),
        &workflows,
        n,
    )
    .await;
}
