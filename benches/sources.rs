//! Sources benchmark (issue 20): Calendly-shaped payloads, each signed as
//! Calendly signs them (`t=...,v1=HMAC`), posted at concurrency 32 to
//! `/hooks/calendly` of the release daemon on loopback. Every payload is
//! verified, mapped, and its event durable before its 202. For comparison,
//! the same number of clients then post the mapped event's equivalent to
//! `/v1/events`. Reports events/s and p50/p99 latency of each.
//!
//! Run: `cargo build --release && cargo bench --bench sources`
//! (BENCH_SECS sets each phase's length, default 10).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::{start, wait_handled};

const KEY: &str = "bench-calendly-signing-key";

const FLOWS: &str = r#"
team:
  people:
    - { email: ana@acme.example }
rules:
  - name: booked
    for: lead
    on: meeting.booked
    do:
      - task: { title: "Prepare the call with {{ lead.name }}", owner: ana@acme.example }
sources:
  - name: calendly
    verify: { scheme: timestamped, header: Calendly-Webhook-Signature, secret: bench-calendly-signing-key }
    events:
      - if: payload.event == "invitee.created"
        type: meeting.booked
        id: "{{ payload.payload.uri }}"
        record: { kind: lead, id: "{{ payload.payload.email | lower }}" }
        fields: { email: "{{ payload.payload.email }}", name: "{{ payload.payload.name }}" }
        data: { starts_at: "{{ payload.payload.scheduled_event.start_time }}", meeting: "{{ payload.payload.scheduled_event.name }}" }
"#;

/// A Calendly `invitee.created` payload, as its webhook sends it.
fn calendly(n: u64) -> Vec<u8> {
    json!({
        "created_at": "2026-03-03T14:00:00.000000Z",
        "created_by": "https://api.calendly.com/users/AAAAAAAAAAAAAAAA",
        "event": "invitee.created",
        "payload": {
            "cancel_url": "https://calendly.com/cancellations/AAAAAAAAAAAAAAAA",
            "email": format!("Lead{}@Prospect.example", n % 5000),
            "name": "Pat Lee",
            "first_name": "Pat", "last_name": "Lee",
            "new_invitee": null, "old_invitee": null,
            "questions_and_answers": [ { "answer": "Reporting", "position": 0, "question": "Topic?" } ],
            "rescheduled": false, "status": "active", "timezone": "America/New_York",
            "uri": format!("https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/{n}"),
            "scheduled_event": {
                "uri": "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2",
                "name": "20 Minute Intro", "status": "active",
                "start_time": "2026-03-05T15:00:00.000000Z", "end_time": "2026-03-05T15:20:00.000000Z"
            }
        }
    })
    .to_string()
    .into_bytes()
}

fn signature(body: &[u8]) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mac = dealflow::signature::sign(KEY.as_bytes(), &[t.as_bytes(), b".", body]);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// What one phase measured.
struct Phase {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` loops for `secs`, each posting what `request(n)` builds.
async fn run(
    clients: usize,
    secs: u64,
    next: Arc<AtomicU64>,
    request: impl Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> Phase {
    let http = reqwest::Client::new();
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..clients {
        let (http, next, request) = (http.clone(), next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut ms = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let builder = request(&http, n);
                let t = Instant::now();
                let r = builder.send().await.unwrap();
                assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms
        }));
    }
    let mut ms = Vec::new();
    for t in tasks {
        ms.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    Phase {
        per_second: ms.len() as f64 / elapsed,
        p50_ms: ms[ms.len() / 2],
        p99_ms: ms[ms.len() * 99 / 100],
    }
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let flows = tmp.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("flows.yaml"), FLOWS).unwrap();
    let daemon = start(&flows, &tmp.path().join("data"));
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let next = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();

    let url = daemon.url.clone();
    let hooks = run(32, secs, next.clone(), move |http, n| {
        let body = calendly(n);
        http.post(format!("{url}/hooks/calendly"))
            .header("Calendly-Webhook-Signature", signature(&body))
            .body(body)
    })
    .await;
    println!(
        "/hooks/calendly, verified Calendly payloads, concurrency 32: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
        hooks.per_second, hooks.p50_ms, hooks.p99_ms
    );
    wait_handled(&http, &daemon.url).await;

    let url = daemon.url.clone();
    let events = run(32, secs, next.clone(), move |http, n| {
        let event = json!({
            "id": format!("calendly/meeting.booked/{n}"), "type": "meeting.booked",
            "record": { "kind": "lead", "id": format!("lead{}@prospect.example", n % 5000),
                        "fields": { "email": format!("Lead{}@Prospect.example", n % 5000), "name": "Pat Lee" } },
            "data": { "starts_at": "2026-03-05T15:00:00.000000Z", "meeting": "20 Minute Intro" }
        });
        http.post(format!("{url}/v1/events")).json(&event)
    })
    .await;
    println!(
        "/v1/events, the same events in dealflow's shape, concurrency 32: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
        events.per_second, events.p50_ms, events.p99_ms
    );
    println!(
        "sources / events: {:.2} of the throughput",
        hooks.per_second / events.per_second
    );
}
