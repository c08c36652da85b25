//! The floor of W1: what a program that does only W1's visible work reaches
//! on this machine, to read dealflow's figure against. It takes the
//! command line the W1 harness gives dealflow (`run --listen A --data D`),
//! answers `POST /v1/events` with 202, and posts each event whose
//! `data.lead.score` is 50 or more to the sink, as dealflow's W1 rule does.
//!
//! With `FLOOR_FSYNC=1` each event is first appended to one file, and the
//! requests waiting at the same moment share one `fdatasync` before their
//! 202 (dealflow's group commit, without its store, engine or outbox).
//! Without it nothing is durable (Node-RED's respond-first flow).

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SINK: &str = "http://127.0.0.1:18080/sink";

/// Outbound posts in flight at most.
const POSTS_IN_FLIGHT: usize = 32;

type Append = (Bytes, oneshot::Sender<u64>);

struct Relay {
    outbound: mpsc::UnboundedSender<serde_json::Value>,
    log: Option<mpsc::Sender<Append>>,
}

async fn ingest(State(relay): State<Arc<Relay>>, body: Bytes) -> (StatusCode, String) {
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut seq = 0;
    if let Some(log) = &relay.log {
        let (done, appended) = oneshot::channel();
        if log.send((body, done)).await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "log stopped".into());
        }
        match appended.await {
            Ok(n) => seq = n,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "log failed".into()),
        }
    }
    if event["data"]["lead"]["score"].as_f64().unwrap_or(0.0) >= 50.0 {
        let _ = relay.outbound.send(serde_json::json!({ "event": event }));
    }
    (StatusCode::ACCEPTED, format!("{{\"id\":\"gen-{seq}\"}}"))
}

/// Appends every waiting event, syncs once, answers each with its number.
async fn append_groups(mut requests: mpsc::Receiver<Append>, path: PathBuf) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut appended = 0u64;
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while let Ok(next) = requests.try_recv() {
            group.push(next);
        }
        let mut lines = Vec::new();
        for (body, _) in &group {
            lines.extend_from_slice(body);
            lines.push(b'\n');
        }
        let (back, written) = tokio::task::spawn_blocking(move || {
            let written = file.write_all(&lines).and_then(|()| file.sync_data());
            (file, written)
        })
        .await?;
        file = back;
        written?;
        for (_, done) in group {
            appended += 1;
            let _ = done.send(appended);
        }
    }
    Ok(())
}

async fn post_to_sink(mut outbound: mpsc::UnboundedReceiver<serde_json::Value>) {
    let client = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(POSTS_IN_FLIGHT));
    while let Some(body) = outbound.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.post(SINK).json(&body).send().await {
                eprintln!("post failed: {e}");
            }
            drop(slot);
        });
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {
        println!("w1-floor 0.1.0");
        return Ok(());
    }
    let listen = flag(&args, "--listen").unwrap_or_else(|| "127.0.0.1:18090".into());
    let data = PathBuf::from(flag(&args, "--data").unwrap_or_else(|| "w1-floor-data".into()));
    std::fs::create_dir_all(&data)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let (outbound, to_post) = mpsc::unbounded_channel();
        tokio::spawn(post_to_sink(to_post));
        let log = std::env::var_os("FLOOR_FSYNC").map(|_| {
            let (log, requests) = mpsc::channel(1024);
            let path = data.join("events.log");
            tokio::spawn(async move {
                if let Err(e) = append_groups(requests, path).await {
                    eprintln!("appending failed: {e}");
                }
            });
            log
        });
        let relay = Arc::new(Relay { outbound, log });
        let app = Router::new()
            .route("/v1/events", post(ingest).get(|| async { "ok" }))
            .with_state(relay);
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        axum::serve(listener, app).await
    })
}
