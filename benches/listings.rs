//! Listings benchmark (issue 26, "listings scale"): `/v1/runs?record=`,
//! `/v1/outbox?record=` and `/v1/tasks?owner=` on a fjall store with 210,000
//! run rows, 210,000 outbox rows and 105,000 open tasks, served from their
//! indexes; the same store scanned whole (a rule filter, a status filter)
//! shows what every listing cost before them.
//!
//! Run: `cargo bench --bench listings` (BENCH_ROWS changes the 210,000).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::DateTime;
use dealflow::state::{
    Delivery, Effects, OutboxEntry, OutboxStatus, RecordKey, Run, Task, TaskStatus,
};
use dealflow::store::{
    Changes, FjallBackend, KvStore, OutboxFilter, OutboxTable, RunFilter, RunTable, Store,
    TaskFilter, TaskTable,
};
use std::time::Instant;

/// Runs (and outbox rows) per record.
const PER_RECORD: usize = 10;

fn main() {
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(210_000);
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(
        dealflow::store::open_disk(dir.path(), dealflow::store::DEFAULT_CACHE_MIB << 20).unwrap(),
        "bench",
    )
    .unwrap();
    let began = Instant::now();
    fill(&store, rows);
    println!(
        "filled {rows} runs, {rows} outbox rows, {} tasks in {:.1?}",
        rows / 2,
        began.elapsed()
    );
    let record = |n: usize| RecordKey {
        kind: "lead".into(),
        id: format!("L{n}"),
    };
    let records = rows / PER_RECORD;
    let by_record = |n| RunFilter {
        record: Some(record(n)),
        rule: None,
    };
    report("runs?record= (index)", 200, |i| {
        store
            .runs(&by_record(i * 7919 % records), None, 100)
            .unwrap()
            .items
            .len()
    });
    let by_rule = RunFilter {
        record: None,
        rule: Some("absent".into()),
    };
    report("runs?rule= (a whole scan, as record= was)", 5, |_| {
        store.runs(&by_rule, None, 100).unwrap().items.len()
    });
    report("outbox?record= (index)", 200, |i| {
        let filter = OutboxFilter {
            status: None,
            record: Some(record(i * 7919 % records)),
        };
        store
            .outbox_matching(&filter, None, 100)
            .unwrap()
            .items
            .len()
    });
    report(
        "outbox?status=dead (a whole scan, as record= was)",
        5,
        |_| {
            let filter = OutboxFilter {
                status: Some(OutboxStatus::Dead),
                record: None,
            };
            store
                .outbox_matching(&filter, None, 100)
                .unwrap()
                .items
                .len()
        },
    );
    report("tasks?owner= open (index)", 200, |i| {
        let filter = TaskFilter {
            owner: Some(format!("rep{}@acme.example", i % 100)),
            status: Some(TaskStatus::Open),
            record: None,
        };
        store.tasks(&filter, None, 100).unwrap().items.len()
    });
    report("tasks?owner= completed (index)", 200, |i| {
        let filter = TaskFilter {
            owner: Some(format!("rep{}@acme.example", i % 100)),
            status: Some(TaskStatus::Completed),
            record: None,
        };
        store.tasks(&filter, None, 100).unwrap().items.len()
    });
    report(
        "tasks?status=completed (a whole scan, as owner= was)",
        5,
        |_| {
            let filter = TaskFilter {
                owner: None,
                status: Some(TaskStatus::Completed),
                record: None,
            };
            store.tasks(&filter, None, 100).unwrap().items.len()
        },
    );
}

/// Prints the median and p90 of `times` calls.
fn report(what: &str, times: usize, mut call: impl FnMut(usize) -> usize) {
    let mut took: Vec<f64> = (0..times)
        .map(|i| {
            let began = Instant::now();
            std::hint::black_box(call(i));
            began.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    took.sort_by(f64::total_cmp);
    println!(
        "{what:<52} median {:>9.3} ms   p90 {:>9.3} ms",
        took[times / 2],
        took[times * 9 / 10]
    );
}

fn fill(store: &KvStore<FjallBackend>, rows: usize) {
    let at = DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
        .unwrap()
        .to_utc();
    for batch in 0..rows.div_ceil(1_000) {
        let range = batch * 1_000..((batch + 1) * 1_000).min(rows);
        let record = |n: usize| RecordKey {
            kind: "lead".into(),
            id: format!("L{}", n / PER_RECORD),
        };
        let runs = range
            .clone()
            .map(|n| Run {
                id: format!("{n:016}-0"),
                rule: "route".into(),
                event_id: format!("e{n}"),
                event_type: "form.submitted".into(),
                record: record(n),
                version: "v1".into(),
                condition: None,
                matched: true,
                saw: Default::default(),
                actions: vec![],
                at,
                error: None,
            })
            .collect();
        let outbox = range
            .clone()
            .map(|n| {
                let mut row = OutboxEntry::pending(
                    format!("{n:016}-intro"),
                    record(n),
                    Delivery::Webhook {
                        url: "https://crm.example/hook".into(),
                        method: "POST".into(),
                        headers: Vec::new(),
                        body: serde_json::json!({ "n": n }).into(),
                        secret: None,
                    },
                    at,
                    "route".into(),
                );
                row.status = OutboxStatus::Sent;
                row
            })
            .collect();
        let tasks = range
            .clone()
            .step_by(2)
            .map(|n| Task {
                id: format!("{n:016}-call"),
                record: record(n),
                title: "Call".into(),
                owner: Some(format!("rep{}@acme.example", n % 100)),
                due_at: None,
                status: TaskStatus::Open,
                notes: None,
                created_at: at,
                completed_at: None,
                created_by: "route".into(),
                step: None,
                from_handoff: false,
            })
            .collect();
        store
            .commit(Changes::from(Effects {
                runs,
                outbox,
                tasks,
                ..Effects::default()
            }))
            .unwrap();
    }
}
