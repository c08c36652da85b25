//! Delivery benchmark (issue 4): emails per second to a local SMTP server
//! through the connection pool, webhooks per second to a local HTTP server,
//! and (issue 23) texts per second to a local server answering like
//! Twilio's Messages API, all through the whole outbox path on the store (claim
//! and flush, hand over, record and flush).
//!
//! Run: `cargo bench --bench delivery` (BENCH_EMAILS, BENCH_WEBHOOKS, BENCH_TEXTS).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

use arc_swap::ArcSwap;
use dealflow::clock::{Clock, SystemClock};
use dealflow::config;
use dealflow::delivery::{self, Outbox, unsubscribe::UnsubscribeKey};
use dealflow::state::Effects;
use dealflow::state::{Delivery, OutboxEntry, OutboxStatus, RecordKey};
use dealflow::store::{Changes, KvStore, OutboxTable, Store};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Sink;

impl mailin_embedded::Handler for Sink {}

fn smtp_sink() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = mailin_embedded::Server::new(Sink);
    server
        .with_name("sink")
        .with_num_threads(40)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    port
}

async fn http_sink() -> String {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Answers every send as Twilio does: `201` with a message id.
async fn twilio_sink() -> String {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move || {
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({ "sid": format!("SM{n:032x}"), "status": "queued" })),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn row(i: usize, delivery: Delivery) -> OutboxEntry {
    let record = RecordKey {
        kind: "lead".into(),
        id: format!("L{i}"),
    };
    OutboxEntry::pending(
        format!("{i:016}-bench"),
        record,
        delivery,
        SystemClock.now(),
        "bench".into(),
    )
}

async fn run(name: &str, yaml: &str, rows: Vec<OutboxEntry>) {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("f.yaml"), yaml).unwrap();
    let (w, d) = config::load(flows.path(), &HashMap::<String, String>::new());
    let workflows = Arc::new(ArcSwap::from_pointee(w.unwrap_or_else(|| panic!("{d:?}"))));
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("store")).unwrap();
    let store = Arc::new(
        KvStore::open(
            dealflow::store::open_disk(
                &data.path().join("store"),
                dealflow::store::DEFAULT_CACHE_MIB << 20,
            )
            .unwrap(),
            "bench",
        )
        .unwrap(),
    );
    let n = rows.len();
    // Records exist, as they would: the stop check reads them.
    let records = rows
        .iter()
        .map(|r| dealflow::state::Record::new(r.record.clone(), SystemClock.now()))
        .collect();
    store
        .commit(Changes::from(Effects {
            records,
            outbox: rows,
            ..Effects::default()
        }))
        .unwrap();
    store.flush().await.unwrap();
    let cancel = CancellationToken::new();
    let began = Instant::now();
    let task = delivery::spawn(
        Outbox {
            store: store.clone(),
            workflows,
            clock: Arc::new(SystemClock),
            key: UnsubscribeKey::from_bytes(&[9; 32]),
            data_dir: data.path().to_path_buf(),
            health: Default::default(),
        },
        cancel.clone(),
    );
    loop {
        if store.next_outbox_due().unwrap().is_none() && store.sending_outbox(1).unwrap().is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let secs = began.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = task.await;
    let dead = store
        .outbox_matching(
            &dealflow::store::OutboxFilter {
                status: Some(OutboxStatus::Dead),
                record: None,
            },
            None,
            10,
        )
        .unwrap()
        .items
        .len();
    println!(
        "{name}: {n} in {secs:.2} s = {:.0}/s ({dead} dead)",
        n as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let emails: usize = std::env::var("BENCH_EMAILS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let hooks: usize = std::env::var("BENCH_WEBHOOKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let port = smtp_sink();
    let yaml = format!(
        "settings: {{ email: {{ transport: \"smtp://127.0.0.1:{port}\", from: \"Acme <sales@acme.example>\" }} }}\n"
    );
    let rows = (0..emails)
        .map(|i| {
            row(
                i,
                Delivery::Email {
                    to: format!("p{i}@p.example"),
                    cc: vec![],
                    from: None,
                    subject: format!("Quick question {i}"),
                    body: "Hi there,\n\nWould a **20-minute** call next week be worth it?\n\nAna"
                        .into(),
                    format: dealflow::state::BodyFormat::Markdown,
                    audience: dealflow::state::Audience::Prospect,
                    thread: None,
                    zone: None,
                },
            )
        })
        .collect();
    run("emails to a local SMTP server (pool of 16)", &yaml, rows).await;
    let url = http_sink().await;
    let yaml = "settings: { webhooks: { allow_hosts: [\"127.0.0.1\"] } }\n";
    let rows = (0..hooks)
        .map(|i| {
            row(
                i,
                Delivery::Webhook {
                    url: format!("{url}/hook"),
                    method: "POST".into(),
                    headers: vec![],
                    body: json!({ "deal": i, "amount": 1200 }).into(),
                    secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
                },
            )
        })
        .collect();
    run("signed webhooks to a local HTTP server", yaml, rows).await;
    let texts: usize = std::env::var("BENCH_TEXTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let url = twilio_sink().await;
    let yaml = format!(
        "settings: {{ public_url: \"https://flows.example\", sms: {{ url: \"{url}\", account: AC1, token: t0ken, from: \"+15550001111\" }} }}\n"
    );
    let rows = (0..texts)
        .map(|i| {
            row(
                i,
                Delivery::Sms {
                    to: format!("+1555{i:07}"),
                    body: "Hi Pat, it's Sam at Acme. Is now a good time for a quick call?".into(),
                    zone: None,
                },
            )
        })
        .collect();
    run("texts to a local Twilio-like server", &yaml, rows).await;
}
