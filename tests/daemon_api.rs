//! The real daemon over loopback HTTP: ingest, reading, gating, tasks, auth.

mod common;

use common::{Daemon, workflow_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FLOWS: &str = r#"
team:
  people:
    - { email: ana@x.example, manager: lee@x.example }
    - { email: lee@x.example }
  teams:
    sdr: [ana@x.example]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: qualified, require: [icp_fit], exit_require: [budget_range] }
      - { name: discovery }
      - { name: lost, outcome: lost, require: [lost_reason] }
rules:
  - name: route
    for: lead
    on: form.submitted
    if: not lead.do_not_contact
    do:
      - assign: { team: sdr }
      - task: { title: "Call {{ lead.email }}", due: 1h }
  - name: thanks-for-finishing
    for: lead
    on: task.completed
    do:
      - set: { called: true }
"#;

struct Setup {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    http: reqwest::Client,
}

fn setup(extra: &[&str], env: &[(&str, &str)]) -> Setup {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), extra, env);
    Setup {
        _dir: dir,
        daemon,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.daemon.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.daemon.url))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until the daemon has handled every stored event.
    async fn settle(&self) {
        for _ in 0..500 {
            let (_, status) = self.get("/v1/status").await;
            if status["events_handled"] == status["events_stored"] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the daemon did not catch up");
    }
}

fn lead(id: &str, event_id: Option<&str>) -> Value {
    let mut e = json!({ "type": "form.submitted", "record": { "kind": "lead", "id": id, "fields": { "email": format!("{id}@p.example") } } });
    if let Some(i) = event_id {
        e["id"] = json!(i);
    }
    e
}

#[tokio::test]
async fn an_event_becomes_an_owner_and_a_task_visible_on_the_record() {
    let s = setup(&[], &[]);
    let (status, body) = s
        .post("/v1/events", lead("L1", Some("e1")).to_string())
        .await;
    assert_eq!(
        (status, body.clone()),
        (
            StatusCode::ACCEPTED,
            json!({ "id": "e1", "duplicate": false })
        )
    );
    s.settle().await;
    let (status, record) = s.get("/v1/records/lead/L1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["record"]["owner"], "ana@x.example");
    assert_eq!(record["open_tasks"][0]["title"], "Call L1@p.example");
    let (_, tasks) = s.get("/v1/tasks?owner=ana@x.example").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
    let (_, runs) = s.get("/v1/runs?record=lead/L1&rule=route").await;
    let run = &runs["runs"][0];
    assert_eq!(run["matched"], true);
    assert_eq!(run["version"].as_str().unwrap().len(), 16);
    assert_eq!(run["actions"][1]["outcome"], "ok");
}

#[tokio::test]
async fn a_repeated_event_id_is_accepted_and_ignored() {
    let s = setup(&[], &[]);
    s.post("/v1/events", lead("L1", Some("same")).to_string())
        .await;
    let (status, body) = s
        .post("/v1/events", lead("L1", Some("same")).to_string())
        .await;
    assert_eq!(
        (status, body["duplicate"].clone()),
        (StatusCode::ACCEPTED, json!(true))
    );
    s.settle().await;
    let (_, tasks) = s.get("/v1/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn kinds_are_open_and_unnamed_ones_are_counted() {
    let s = setup(&[], &[]);
    for id in ["1", "2"] {
        let event = json!({ "type": "x", "record": { "kind": "leda", "id": id } });
        let (status, body) = s.post("/v1/events", event.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (_, status) = s.get("/v1/status").await;
    assert_eq!(
        status["unnamed_kinds"],
        json!([{ "kind": "leda", "events": 2 }]),
        "{status}"
    );
    let nothing_aside = json!({ "count": 0, "latest": [] });
    assert_eq!(status["engine"]["set_aside"], nothing_aside, "{status}");
    assert_eq!(
        status["engine"]["set_aside_timers"], nothing_aside,
        "{status}"
    );
    let metrics = reqwest::get(format!("{}/metrics", s.daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dealflow_events_unnamed_kind_total 2"),
        "{metrics}"
    );
    // The record is stored like any other, once the worker handled it.
    common::eventually(5, "the leda record", || async {
        let (status, _) = s.get("/v1/records/leda/1").await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_the_exact_reason_and_change_nothing() {
    let s = setup(&["--max-body", "2048"], &[]);
    let (status, body) = s.post("/v1/events", "{\"type\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body) = s
        .post(
            "/v1/events",
            json!({ "record": { "kind": "lead", "id": "1" } }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["message"].clone()),
        (StatusCode::BAD_REQUEST, json!("missing field \"type\""))
    );
    let batch = json!([lead("L1", None), { "type": "x" }, lead("L2", None)]);
    let (status, body) = s.post("/v1/events", batch.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["events"],
        json!([{ "index": 1, "message": "missing field \"record\"" }])
    );
    let (status, _) = s.post("/v1/events", vec![b' '; 4096]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let deep = format!("{}{}", "[".repeat(600), "]".repeat(600));
    let (status, _) = s.post("/v1/events", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.post("/v1/events", vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.settle().await;
    let (_, status_body) = s.get("/v1/status").await;
    assert_eq!(status_body["events_handled"], 0, "nothing was stored");
    let (status, _) = s.get("/v1/records/lead/L1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_gated_move_is_refused_with_every_unmet_requirement_then_allowed() {
    let s = setup(&[], &[]);
    s.post("/v1/events", json!({ "type": "deal.opened", "record": { "kind": "deal", "id": "D1", "fields": { "icp_fit": "yes" } } }).to_string()).await;
    s.settle().await;
    let (status, body) = s
        .post(
            "/v1/records/deal/D1/stage",
            json!({ "to": "discovery" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["unmet"],
        json!(["budget_range is required to leave qualified"])
    );
    let (_, record) = s.get("/v1/records/deal/D1").await;
    assert_eq!(record["record"]["stage"], "qualified");
    s.post("/v1/events", json!({ "type": "deal.updated", "record": { "kind": "deal", "id": "D1", "fields": { "budget_range": "50k" } } }).to_string()).await;
    s.settle().await;
    let (status, body) = s
        .post(
            "/v1/records/deal/D1/stage",
            json!({ "to": "discovery" }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({ "record": "deal/D1", "from": "qualified", "to": "discovery" })
        )
    );
    let (_, record) = s.get("/v1/records/deal/D1").await;
    assert_eq!(record["history"].as_array().unwrap().len(), 2);
    let (status, _) = s
        .post(
            "/v1/records/deal/D9/stage",
            json!({ "to": "discovery" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .post(
            "/v1/records/deal/D1/stage",
            json!({ "stage": "x" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn completing_a_task_emits_task_completed_for_rules() {
    let s = setup(&[], &[]);
    s.post("/v1/events", lead("L1", None).to_string()).await;
    s.settle().await;
    let (_, tasks) = s.get("/v1/tasks").await;
    let id = tasks["tasks"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = s.post(&format!("/v1/tasks/{id}/complete"), "").await;
    assert_eq!(
        (status, body["task"]["status"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    s.settle().await;
    let (_, record) = s.get("/v1/records/lead/L1").await;
    assert_eq!(record["record"]["called"], true);
    let (status, _) = s.post(&format!("/v1/tasks/{id}/complete"), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = s.post("/v1/tasks/nope/complete", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_token_is_required_when_set() {
    let s = setup(&[], &[("DEALFLOW_TOKEN", "s3cret")]);
    let (status, body) = s.get("/v1/status").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let r = s
        .http
        .get(format!("{}/v1/status", s.daemon.url))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .http
        .get(format!("{}/healthz", s.daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let (dir, flows) = workflow_dir(FLOWS);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["run", "--listen", "0.0.0.0:0", "--workflows"])
        .arg(&flows)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env_remove("DEALFLOW_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
}

#[test]
fn emit_posts_an_event_from_the_shell() {
    let s = setup(&[], &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args([
            "emit",
            "form.submitted",
            "--record",
            "lead/L7",
            "--field",
            "email=l7@p.example",
            "--data",
            "source=webinar",
            "--id",
            "cli-1",
            "--url",
            &s.daemon.url,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted cli-1 form.submitted"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(s.settle());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["tasks", "--url", &s.daemon.url])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.contains("Call l7@p.example"), "{listing}");

    // The task is completed from the shell.
    let (_, tasks) = runtime.block_on(s.get("/v1/tasks?status=open"));
    let id = tasks["tasks"][0]["id"].as_str().unwrap().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["tasks", "complete", &id, "--url", &s.daemon.url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("completed {id}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, open) = runtime.block_on(s.get("/v1/tasks?status=open"));
    assert_eq!(open["tasks"], json!([]), "{open}");

    // A URL without its scheme is explained, not sent.
    let bare = s.daemon.url.trim_start_matches("http://").to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["tasks", "--url", &bare])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("write http://{bare}")), "{stderr}");
}

#[test]
fn a_second_daemon_on_the_same_data_says_so() {
    let s = setup(&[], &[]);
    let data = s._dir.path().join("data");
    let flows = s._dir.path().join("flows");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["run", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(&flows)
        .arg("--data")
        .arg(&data)
        .env_remove("DEALFLOW_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("in use by another dealflow process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn round_robin_continues_where_it_left_off_after_a_restart() {
    let (dir, flows) = workflow_dir(&FLOWS.replace(
        "sdr: [ana@x.example]",
        "sdr: [ana@x.example, lee@x.example]",
    ));
    let data = dir.path().join("data");
    let mut owners = Vec::new();
    for (round, ids) in [["L1", "L2", "L3"], ["L4", "L5", "L6"]].iter().enumerate() {
        let s = Setup {
            _dir: tempfile::tempdir().unwrap(),
            daemon: Daemon::start(&flows, &data, &[], &[]),
            http: reqwest::Client::new(),
        };
        for id in ids.iter() {
            s.post(
                "/v1/events",
                lead(id, Some(&format!("{round}-{id}"))).to_string(),
            )
            .await;
            s.settle().await;
            let (_, record) = s.get(&format!("/v1/records/lead/{id}")).await;
            owners.push(record["record"]["owner"].as_str().unwrap().to_owned());
        }
    }
    let expected: Vec<&str> = ["ana@x.example", "lee@x.example"]
        .iter()
        .cycle()
        .take(6)
        .copied()
        .collect();
    assert_eq!(owners, expected, "turns continue across the restart");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_with_nothing_lost() {
    let (dir, flows) = workflow_dir(FLOWS);
    let data = dir.path().join("data");
    let s = Setup {
        _dir: tempfile::tempdir().unwrap(),
        daemon: Daemon::start(&flows, &data, &[], &[]),
        http: reqwest::Client::new(),
    };
    let batch: Vec<Value> = (0..200)
        .map(|i| lead(&format!("L{i}"), Some(&format!("e{i}"))))
        .collect();
    let (status, _) = s.post("/v1/events", Value::Array(batch).to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let pid = s.daemon.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut daemon = s.daemon;
    let exit = tokio::task::spawn_blocking(move || daemon.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "a clean stop exits 0, got {exit:?}");
    let s = Setup {
        _dir: tempfile::tempdir().unwrap(),
        daemon: Daemon::start(&flows, &data, &[], &[]),
        http: reqwest::Client::new(),
    };
    s.settle().await;
    let (_, tasks) = s.get("/v1/tasks?limit=500").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_move_is_answered_while_events_keep_arriving() {
    let s = setup(&[], &[]);
    s.post("/v1/events", json!({ "type": "deal.opened", "record": { "kind": "deal", "id": "D1", "fields": { "icp_fit": "yes" } } }).to_string()).await;
    s.settle().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (url, flag) = (s.daemon.url.clone(), stop.clone());
    let load = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut n = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let batch: Vec<Value> = (0..100)
                .map(|i| lead(&format!("L{}", n * 100 + i), None))
                .collect();
            let _ = http
                .post(format!("{url}/v1/events"))
                .json(&batch)
                .send()
                .await;
            n += 1;
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // A hang detector, not a speed assertion: the move must be answered at all
    // while the log never runs empty.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        s.post(
            "/v1/records/deal/D1/stage",
            json!({ "to": "discovery" }).to_string(),
        ),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;
    let (status, _) = answer.expect("the stage move was never answered");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Checks one line of the Prometheus text format (0.0.4): a comment, or
/// `name{label="value",...} number`.
fn prometheus_line_ok(line: &str) -> bool {
    if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
        return true;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let name_ok = !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let Some(close) = labels.find("} ") else {
            return false;
        };
        let ok = labels[..close]
            .split("\",")
            .filter(|p| !p.is_empty())
            .all(|pair| {
                pair.split_once("=\"").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            });
        if !ok {
            return false;
        }
        rest = &labels[close + 1..];
    }
    let value = rest.trim().split(' ').next().unwrap_or("");
    name_ok && (value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_bounded_labels() {
    let s = setup(&[], &[]);
    s.post("/v1/events", lead("L1", Some("m1")).to_string())
        .await;
    let unknown =
        json!({ "type": "made.up.by.a.sender", "record": { "kind": "lead", "id": "L2" } });
    // One batch, counted per type (and its runs per rule) before recording.
    let batch = json!([lead("L3", None), unknown, lead("L4", None)]);
    s.post("/v1/events", batch.to_string()).await;
    s.settle().await;
    let text = reqwest::get(format!("{}/metrics", s.daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for bad in ["bad line", "x{a=b} 1", "1x 2", "y{a=\"b\"} notanumber"] {
        assert!(!prometheus_line_ok(bad), "the check must refuse {bad:?}");
    }
    for line in text.lines() {
        assert!(prometheus_line_ok(line), "not Prometheus text: {line:?}");
    }
    assert!(
        text.contains("dealflow_events_ingested_total{type=\"form.submitted\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("dealflow_events_ingested_total{type=\"other\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dealflow_rule_runs_total{rule=\"route\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("dealflow_actions_total{action=\"task\",outcome=\"ok\"} 3"),
        "{text}"
    );
    assert!(text.contains("dealflow_store_bytes "), "{text}");
    assert!(
        text.contains("dealflow_timers_pending 3"),
        "the call tasks' overdue timers: {text}"
    );
    assert!(
        !text.contains("L1") && !text.contains("made.up"),
        "no ids or made-up types in labels: {text}"
    );
}

#[tokio::test]
async fn reports_count_stage_moves_over_http_and_from_the_shell() {
    let s = setup(&[], &[]);
    for id in ["D1", "D2", "D3"] {
        let fields = json!({ "icp_fit": "yes", "budget_range": "50k", "owner": "ana@x.example" });
        s.post("/v1/events", json!({ "type": "deal.opened", "record": { "kind": "deal", "id": id, "fields": fields } }).to_string()).await;
    }
    s.settle().await;
    s.post(
        "/v1/records/deal/D1/stage",
        json!({ "to": "discovery" }).to_string(),
    )
    .await;
    s.post("/v1/events", json!({ "type": "deal.lost", "record": { "kind": "deal", "id": "D2", "fields": { "lost_reason": "price" } } }).to_string()).await;
    s.settle().await;
    s.post(
        "/v1/records/deal/D2/stage",
        json!({ "to": "lost" }).to_string(),
    )
    .await;
    let (status, refused) = s
        .post(
            "/v1/records/deal/D3/stage",
            json!({ "to": "lost" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (status, reports) = s.get("/v1/reports/pipeline?since=1d").await;
    assert_eq!(status, StatusCode::OK, "{reports}");
    let b2b = &reports[0];
    assert_eq!(b2b["pipeline"], "b2b");
    let qualified = &b2b["stages"][0];
    assert_eq!(qualified["stage"], "qualified", "{b2b}");
    assert_eq!(b2b["by_owner"][0]["owner"], "ana@x.example", "{b2b}");
    assert_eq!(
        b2b["by_owner"][0]["stages"][0]["stage"], "qualified",
        "{b2b}"
    );
    assert_eq!(qualified["entered"], 3, "{b2b}");
    assert_eq!(qualified["still_in"], 1);
    assert_eq!(
        qualified["advanced"], 2,
        "discovery and the outcome stage are both later"
    );
    assert_eq!(b2b["lost"], 1);
    assert_eq!(b2b["win_rate"], 0.0);
    assert_eq!(qualified["refused_moves"], 1, "{b2b}");
    let (status, _) = s.get("/v1/reports/nonsense").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, only) = s.get("/v1/reports/pipeline?since=1d&pipeline=b2b").await;
    assert_eq!(
        (status, only[0]["pipeline"].clone()),
        (StatusCode::OK, json!("b2b"))
    );
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    let (status, missing) = s.get("/v1/reports/pipeline?pipeline=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, owners) = s.get("/v1/reports/owners").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        owners["ana@x.example"]["records_by_stage"]["deal/qualified"], 1,
        "{owners}"
    );

    let url = s.daemon.url.clone();
    let csv = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
            .args([
                "report",
                "pipeline",
                "--since",
                "1d",
                "--pipeline",
                "b2b",
                "--format",
                "csv",
                "--url",
                &url,
            ])
            .env_remove("DEALFLOW_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert!(csv.status.success(), "{text}");
    assert!(text.starts_with("pipeline,owner,stage,entered,exited,still_in,advanced,moved_back,to_next,to_won,median_hours,p90_hours,stalled,stall_notices,refused,most_blocking\n"), "{text}");
    assert!(
        text.contains("b2b,(all),qualified,3,2,1,2,0,66.7%,0.0%,"),
        "{text}"
    );
    assert!(
        text.contains(",0,0,1,lost_reason is required to enter lost\n"),
        "D3's refused move, by its one unmet requirement: {text}"
    );
}

#[tokio::test]
async fn runs_past_keep_runs_are_forgotten() {
    let (dir, flows) = workflow_dir(&format!("{FLOWS}\nsettings:\n  keep_runs: 2s\n"));
    let s = Setup {
        daemon: Daemon::start(&flows, &dir.path().join("data"), &[], &[]),
        _dir: dir,
        http: reqwest::Client::new(),
    };
    s.post("/v1/events", lead("L1", Some("e1")).to_string())
        .await;
    s.settle().await;
    let (_, runs) = s.get("/v1/runs?record=lead/L1").await;
    assert_eq!(runs["runs"][0]["rule"], "route", "{runs}");
    common::eventually(15, "the run forgotten after 2s", || async {
        let (_, runs) = s.get("/v1/runs?record=lead/L1").await;
        runs["runs"]
            .as_array()
            .is_some_and(|r| r.is_empty())
            .then_some(())
    })
    .await;
    // The record and its task are not run history: they stay.
    let (status, record) = s.get("/v1/records/lead/L1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["open_tasks"][0]["title"], "Call L1@p.example");
}

#[tokio::test]
async fn a_daemon_with_a_one_mib_store_cache_works() {
    let s = setup(&["--store-cache-mib", "1"], &[]);
    s.post("/v1/events", lead("L1", Some("e1")).to_string())
        .await;
    s.settle().await;
    let (status, record) = s.get("/v1/records/lead/L1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["record"]["owner"], "ana@x.example");
}

/// `dealflow run` on a store expected to be refused: its whole output.
fn run_to_exit(flows: &std::path::Path, data: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["run", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(flows)
        .arg("--data")
        .arg(data)
        .env_remove("DEALFLOW_TOKEN")
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn a_damaged_store_stops_the_daemon_with_the_folder_and_what_to_do() {
    let s = setup(&[], &[]);
    let data = s._dir.path().join("data");
    let flows = s._dir.path().join("flows");
    s.daemon.kill();
    // fjall's version file, overwritten: the store cannot be read.
    std::fs::write(
        data.join("store/version"),
        [0xffu8, 0x00, 0x13, 0x37].repeat(16),
    )
    .unwrap();
    let out = run_to_exit(&flows, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is corrupt or unreadable"), "{stderr}");
    assert!(
        stderr.contains(&data.join("store").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("restore the data folder from a backup"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_store_whose_data_file_was_destroyed_is_not_started_empty() {
    let s = setup(&[], &[]);
    let (status, _) = s
        .post("/v1/events", lead("L1", Some("e1")).to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.settle().await;
    let data = s._dir.path().join("data");
    let flows = s._dir.path().join("flows");
    s.daemon.kill();
    // The engine's files gone (a careless cleanup, a bad restore): fjall
    // would open the folder as a new, empty store.
    for entry in std::fs::read_dir(data.join("store")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "keyspaces" {
            std::fs::remove_dir_all(&path).unwrap();
        } else if name.ends_with(".jnl") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let out = run_to_exit(&flows, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reads as empty"), "{stderr}");
}

/// The niceness of each thread of a process, by thread name (Linux).
#[cfg(target_os = "linux")]
fn thread_niceness(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // "tid (name) state ..." : the name may hold spaces; nice is the
        // 19th field, the 17th after the closing parenthesis.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        threads.push((name, nice));
    }
    threads
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_engine_and_delivery_run_on_a_thread_of_their_own_at_the_requests_priority() {
    let s = setup(&[], &[]);
    let (status, _) = s.post("/v1/events", lead("L1", None).to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.settle().await;
    let threads = thread_niceness(s.daemon.child.id());
    let nice_of = |named: &dyn Fn(&str) -> bool| -> Vec<i32> {
        let found: Vec<i32> = threads
            .iter()
            .filter(|(n, _)| named(n))
            .map(|(_, nice)| *nice)
            .collect();
        assert!(!found.is_empty(), "no such thread in {threads:?}");
        found
    };
    // The requests run on the main thread and its pool (which synced the
    // event's append); the engine and delivery on one thread beside them.
    let requests = nice_of(&|n| n == "dealflow" || n == "dealflow-reques");
    assert!(requests.len() >= 2, "{threads:?}");
    let background = nice_of(&|n| n == "dealflow-backgr");
    assert!(
        requests
            .iter()
            .chain(&background)
            .all(|n| *n == requests[0]),
        "{threads:?}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_daemon_keeps_its_memory_in_small_pages() {
    let s = setup(&[], &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.daemon.child.id())).unwrap();
    // Linux reports the process's setting since 5.0.
    let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:"));
    assert_eq!(thp.map(str::trim), Some("0"), "{status}");
}
