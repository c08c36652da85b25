//! Bad input over HTTP (SPEC §6): every refusal is a JSON error in the
//! documented shape, nothing panics, nothing hangs, and names that could
//! collide in the store are refused where they enter.

mod common;

use common::{Daemon, workflow_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

const FLOWS: &str = r#"
rules:
  - name: greet
    for: lead
    on: signed.up
    do: [ { set: { greeted: true } } ]
"#;

fn start(extra: &[&str]) -> (tempfile::TempDir, Daemon) {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), extra, &[]);
    (dir, daemon)
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(
        kind.starts_with("application/json"),
        "{status}: {kind} {body}"
    );
    assert!(body["error"]["code"].is_string(), "{status}: {body}");
    assert!(body["error"]["message"].is_string(), "{status}: {body}");
    (status, body)
}

#[tokio::test]
async fn every_refusal_is_a_json_error_and_none_panics() {
    let (_dir, daemon) = start(&["--max-body", "1024"]);
    let url = &daemon.url;
    let http = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (http.get(format!("{url}/v1/nowhere")), StatusCode::NOT_FOUND),
        (http.get(format!("{url}/nowhere")), StatusCode::NOT_FOUND),
        (
            http.delete(format!("{url}/v1/events")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            http.post(format!("{url}/v1/events")).body("x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            http.get(format!("{url}/v1/tasks?bogus=1")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{url}/v1/tasks?limit=many")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{url}/v1/reports/pipeline?since=100000000d")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{url}/v1/reports/owners?since=100000000d")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{url}/v1/records/lead/L9%00x")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{url}/v1/runs?record=lead/L9%00x")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.post(format!("{url}/v1/events"))
                .json(&json!({ "type": "x", "record": { "kind": "lead", "id": "L9\u{0}x" } })),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{body}");
    }
    // Still up and answering.
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case() {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(
        &flows,
        &dir.path().join("data"),
        &[],
        &[("DEALFLOW_TOKEN", "t0ken")],
    );
    let http = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = http
            .get(format!("{}/v1/status", daemon.url))
            .header("authorization", format!("{scheme} t0ken"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    let (status, _) = error_of(
        http.get(format!("{}/v1/status", daemon.url))
            .header("authorization", "Basic t0ken")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn half_a_request_is_cut_off() {
    let (_dir, daemon) = start(&["--read-timeout", "1s"]);
    let address = daemon.url.trim_start_matches("http://").to_owned();
    // Half the headers: the connection is closed.
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // Ok is the daemon closing the connection; our own 10 s limit is an Err.
    let closed = socket.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the half request was kept open: {closed:?}");
    // Headers, and half the body promised: refused in the usual shape.
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
        .unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(
        answer.contains("not received within the designated timeout"),
        "{answer}"
    );
}
