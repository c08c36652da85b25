//! Timer benchmark (issue 5): 1,000,000 pending sequence timers on disk (fjall) —
//! resident memory, time to schedule them, and timers fired per second when
//! they come due (the scheduler turning each into a logged event and
//! deleting it, one atomic commit and one flush per batch), with 10,000
//! versus 1,000,000 pending.
//!
//! Run: `cargo bench --bench timers` (BENCH_TIMERS changes the million).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[path = "support.rs"]
mod support;

// The daemon's allocator (src/main.rs), so the store is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Duration, Utc};
use dealflow::config;
use dealflow::state::Effects;
use dealflow::state::{NewEvent, RecordKey, Timer};
use dealflow::store::{Changes, FjallBackend, KvStore, Store};
use serde_json::{Map, json};
use std::collections::HashMap;
use std::time::Instant;

fn timer(i: u64, start: DateTime<Utc>) -> Timer {
    let record = RecordKey {
        kind: "lead".into(),
        id: format!("L{i}"),
    };
    // Spread over 30 days, like a month of cadences in flight.
    let due = start + Duration::seconds((i * 2_592_000 / 1_000_000) as i64);
    Timer {
        id: format!("step/{record}/cold-outreach/1772456400000/{i}"),
        due_at: due,
        event: NewEvent {
            id: None,
            event_type: "dealflow.step".into(),
            record,
            fields: Map::new(),
            data: json!({ "sequence": "cold-outreach", "resume": "step", "step": "bump" })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            occurred_at: due,
            depth: 0,
        },
    }
}

/// Timers per commit while scheduling: the worker's round of events
/// (`src/worker`, 256 events) each starting a sequence.
const SCHEDULE_BATCH: u64 = 256;

async fn schedule(store: &KvStore<FjallBackend>, n: u64, start: DateTime<Utc>) -> f64 {
    let began = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<Timer> = (i..(i + SCHEDULE_BATCH).min(n))
            .map(|j| timer(j, start))
            .collect();
        i += batch.len() as u64;
        store
            .commit(Changes::from(Effects {
                timers: batch,
                ..Effects::default()
            }))
            .unwrap();
        // As the daemon does: durable before the next batch is taken.
        store.flush().await.unwrap();
    }
    began.elapsed().as_secs_f64()
}

/// Fires `count` due timers (or all that are due, when fewer); answers how
/// many fired and how many per second.
async fn fire(
    store: &KvStore<FjallBackend>,
    workflows: &config::Workflows,
    count: usize,
    now: DateTime<Utc>,
) -> (usize, f64) {
    let began = Instant::now();
    let mut fired = 0;
    while fired < count {
        let n = dealflow::scheduler::fire_due(store, workflows, now).unwrap();
        store.flush().await.unwrap();
        if n == 0 {
            break;
        }
        fired += n;
    }
    (fired, fired as f64 / began.elapsed().as_secs_f64())
}

fn open(dir: &std::path::Path) -> KvStore<FjallBackend> {
    KvStore::open(
        dealflow::store::open_disk(dir, dealflow::store::DEFAULT_CACHE_MIB << 20).unwrap(),
        "bench",
    )
    .unwrap()
}

/// Firing rates of successive chunks of `CHUNK` timers, `chunks` of them
/// (fewer when the due timers run out).
async fn chunk_rates(
    store: &KvStore<FjallBackend>,
    workflows: &config::Workflows,
    chunks: usize,
    now: DateTime<Utc>,
) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..chunks {
        let (fired, rate) = fire(store, workflows, CHUNK, now).await;
        if fired < CHUNK {
            break;
        }
        rates.push(rate);
    }
    rates
}

/// Timers fired per measured chunk: two scheduler batches.
const CHUNK: usize = 2048;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("f.yaml"), "rules: []\n").unwrap();
    let (workflows, d) = config::load(flows.path(), &HashMap::<String, String>::new());
    let workflows = workflows.unwrap_or_else(|| panic!("{d:?}"));
    let million: u64 = std::env::var("BENCH_TIMERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let start = DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .unwrap()
        .to_utc();
    let after_all = start + Duration::days(31);

    let rss_before = support::rss_mib();
    let big_dir = tempfile::tempdir().unwrap();
    let big = open(big_dir.path());
    let secs = schedule(&big, million, start).await;
    let rss_after = support::rss_mib();
    println!(
        "schedule {million} timers: {secs:.1} s ({:.0}/s); RSS {rss_before:.0} MiB before, {rss_after:.0} MiB after; store {:.0} MiB",
        million as f64 / secs,
        big.size_on_disk() as f64 / 1_048_576.0
    );
    // Only the first day is due: the rest must not slow firing down.
    let first_day = start + Duration::days(1);
    let day_rate = median(chunk_rates(&big, &workflows, 10, first_day).await);

    // All due, 10,000 pending (a fresh store each round, drained in four
    // chunks, so at least 1,800 are pending when a chunk starts) against
    // 1,000,000 (the same big store each round). The rounds alternate the
    // two so that the shared machine's changing load falls on both alike.
    let (mut small_rates, mut big_rates) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let small = open(dir.path());
        schedule(&small, 10_000, start).await;
        small_rates.extend(chunk_rates(&small, &workflows, 4, after_all).await);
        big_rates.extend(chunk_rates(&big, &workflows, 10, after_all).await);
    }
    let sample = big_rates.len() * CHUNK;
    let (small_rate, big_rate) = (median(small_rates), median(big_rates));
    println!(
        "fire (median of chunks of {CHUNK}): 10,000 pending → {small_rate:.0} timers/s; {million} pending, first day due → {day_rate:.0}/s; all due → {big_rate:.0}/s over {sample}; ratio {:.2}; RSS {:.0} MiB",
        big_rate / small_rate,
        support::rss_mib()
    );
}
