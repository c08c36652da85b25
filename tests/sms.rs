//! Texts end to end (SPEC §3.12): the real daemon sends through a server on
//! loopback that speaks Twilio's Messages API, and Twilio-signed replies,
//! opt-outs and delivery receipts come back to `/hooks/sms`.

#![allow(clippy::disallowed_methods)]

mod common;

use common::twilio::{self, Twilio, text_in};
use common::{Daemon, eventually, get_json, post_json, task_titles, workflow_dir};
use serde_json::{Value, json};
use std::time::Duration;

const PAT: &str = "+15551230001";

fn flows(provider: &str, quiet_hours: &str) -> String {
    format!(
        r#"
settings:
  sms:
    provider: twilio
    url: "{provider}"
    account: "${{TWILIO_ACCOUNT_SID}}"
    token: "${{TWILIO_AUTH_TOKEN}}"
    from: "+15550001111"
{quiet_hours}
  retry: {{ first: 1s, max_delay: 1s }}

sequences:
  - name: text-first
    for: lead
    steps:
      - id: hello
        sms: {{ body: "Hi {{{{ lead.name }}}}, this is Acme. Is now a good time to talk?" }}
      - wait: 2s
      - id: bump
        sms: {{ body: "Following up, {{{{ lead.name }}}}." }}

rules:
  - name: start texting
    on: lead.created
    do:
      - enroll: text-first
  - name: text failed
    on: sms.failed
    do:
      - task: {{ title: "Text to {{{{ event.phone }}}} failed ({{{{ event.status }}}} {{{{ event.error_code }}}})", owner: rep@acme.example }}
  - name: opted out
    on: sms.opted_out
    do:
      - task: {{ title: "{{{{ event.phone }}}} opted out", owner: rep@acme.example }}
  - name: one text
    on: ping.text
    do:
      - sms: {{ body: "Ping {{{{ event.n }}}}" }}

team:
  people:
    - {{ email: rep@acme.example, name: Rep }}
"#
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    twilio: Twilio,
}

async fn setup(fail_first: usize, quiet_hours: &str) -> Setup {
    let twilio = Twilio::start(fail_first).await;
    let (dir, flows_dir) = workflow_dir(&flows(&twilio.url, quiet_hours));
    let daemon = start(&flows_dir, &dir.path().join("data"));
    Setup {
        _dir: dir,
        daemon,
        twilio,
    }
}

fn start(flows: &std::path::Path, data: &std::path::Path) -> Daemon {
    Daemon::start(
        flows,
        data,
        &[],
        &[
            ("TWILIO_ACCOUNT_SID", twilio::ACCOUNT),
            ("TWILIO_AUTH_TOKEN", twilio::TOKEN),
        ],
    )
}

async fn lead(url: &str, id: &str, phone: &str, consent: Value) -> (reqwest::StatusCode, Value) {
    post_json(
        &format!("{url}/v1/events"),
        json!({"type": "lead.created", "record": {"kind": "lead", "id": id,
               "fields": {"name": "Pat", "phone": phone, "sms_consent": consent}}}),
    )
    .await
}

/// Posts `ping.text` (the rule "one text" texts "Ping N") for lead `id`.
async fn ping(url: &str, id: &str, phone: &str, n: u32) -> reqwest::StatusCode {
    post_json(
        &format!("{url}/v1/events"),
        json!({"type": "ping.text", "record": {"kind": "lead", "id": id,
               "fields": {"phone": phone, "sms_consent": true}}, "data": {"n": n}}),
    )
    .await
    .0
}

async fn outbox(url: &str) -> Vec<Value> {
    get_json(&format!("{url}/v1/outbox?limit=500")).await["outbox"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn enrollment(url: &str, id: &str) -> Value {
    get_json(&format!("{url}/v1/records/lead/{id}")).await["enrollments"][0].clone()
}

#[tokio::test]
async fn a_text_goes_out_and_a_reply_ends_the_cadence() {
    let s = setup(0, "").await;
    let url = &s.daemon.url;
    let answer = lead(url, "L1", PAT, json!(true)).await;
    assert_eq!(answer.0, 202, "{}", answer.1);
    let text = eventually(10, "the first text", || async {
        s.twilio.texts().into_iter().next()
    })
    .await;
    assert_eq!(text.to, PAT);
    assert_eq!(text.from, "+15550001111");
    assert_eq!(
        text.body,
        "Hi Pat, this is Acme. Is now a good time to talk?"
    );
    let callback = text.status_callback.clone().unwrap();
    assert!(
        callback.starts_with(&format!("{url}/hooks/sms?row=")),
        "{callback}"
    );
    // The row keeps Twilio's id, and sms.sent is raised.
    let row = eventually(10, "the row sent", || async {
        outbox(url)
            .await
            .into_iter()
            .find(|r| r["status"] == "sent" && r["provider_id"] == text.sid.as_str())
    })
    .await;
    assert_eq!(row["delivery"]["kind"], "sms");
    // Pat replies before the bump: the enrollment exits, no second text.
    assert_eq!(
        text_in(url, "SMreply1", PAT, "Yes, call me after 3", twilio::TOKEN).await,
        200
    );
    let e = eventually(10, "the enrollment to exit", || async {
        let e = enrollment(url, "L1").await;
        (e["status"] == "exited").then_some(e)
    })
    .await;
    assert_eq!(e["exit_reason"], "sms.replied");
    // The same reply retried by Twilio is one event.
    assert_eq!(
        text_in(url, "SMreply1", PAT, "Yes, call me after 3", twilio::TOKEN).await,
        200
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.twilio.texts().len(), 1, "{:?}", s.twilio.texts());
    // A delivery receipt: delivered is kept on the row; undelivered also
    // raises sms.failed.
    assert_eq!(s.twilio.callback(&text, "delivered", None).await, 200);
    let id = row["id"].as_str().unwrap().to_owned();
    let shown = get_json(&format!("{url}/v1/outbox?record=lead/L1")).await;
    let receipt = &shown["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()["receipt"];
    assert_eq!(receipt["status"], "delivered", "{shown}");
    assert_eq!(
        s.twilio.callback(&text, "undelivered", Some("30003")).await,
        200
    );
    eventually(10, "the failure task", || async {
        task_titles(url, "open")
            .await
            .into_iter()
            .find(|t| t == &format!("Text to {PAT} failed (undelivered 30003)"))
    })
    .await;
}

#[tokio::test]
async fn bad_numbers_and_missing_consent_fail_the_action_and_send_nothing() {
    let s = setup(0, "").await;
    let url = &s.daemon.url;
    for (id, phone, consent) in [
        ("L1", "+1 555 123 0002", json!(true)),
        ("L2", "555CALLNOW", json!(true)),
        ("L3", "+15551230003", json!(false)),
        ("L4", "+15551230004", Value::Null),
    ] {
        assert_eq!(lead(url, id, phone, consent).await.0, 202);
    }
    for (id, why) in [
        ("L1", "E.164"),
        ("L2", "E.164"),
        ("L3", "sms_consent"),
        ("L4", "sms_consent"),
    ] {
        let e = eventually(10, "the enrollment to fail", || async {
            let e = enrollment(url, id).await;
            (e["status"] == "exited").then_some(e)
        })
        .await;
        assert_eq!(e["exit_reason"], "failed", "{id}: {e}");
        let runs = get_json(&format!("{url}/v1/runs?record=lead/{id}")).await;
        assert!(runs.to_string().contains(why), "{id}: {runs}");
    }
    assert_eq!(s.twilio.requests(), 0);
}

#[tokio::test]
async fn quiet_hours_hold_a_text_until_they_end() {
    // Quiet from this hour for two hours, UTC (settings.timezone).
    let hour = chrono::Utc::now()
        .format("%H")
        .to_string()
        .parse::<u32>()
        .unwrap();
    let quiet = format!(
        "    quiet_hours: \"{hour:02}:00-{:02}:00\"",
        (hour + 2) % 24
    );
    let s = setup(0, &quiet).await;
    let url = &s.daemon.url;
    let ends = format!("{:02}:00", (hour + 2) % 24);
    // A sequence's text waits for the end of quiet hours, as its timeline says.
    // Its step is first due at once; the worker's next turn fires it into
    // quiet hours and holds it, so wait for a step held past now.
    assert_eq!(lead(url, "L1", PAT, json!(true)).await.0, 202);
    let (e, next) = eventually(10, "the enrollment to wait", || async {
        let e = enrollment(url, "L1").await;
        let next = e["next_at"]
            .as_str()
            .and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .filter(|at| *at > chrono::Utc::now());
        next.filter(|_| e["next_step"] == "hello")
            .map(|next| (e, next))
    })
    .await;
    assert_eq!(next.format("%H:%M").to_string(), ends, "{e}");
    // A rule's text is queued, and delivery holds it until they end.
    let status = ping(url, "L2", "+15551230002", 1).await;
    assert_eq!(status, 202);
    let row = eventually(10, "the deferral", || async {
        outbox(url).await.into_iter().find(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("quiet_hours"))
        })
    })
    .await;
    assert_eq!(row["status"], "pending", "{row}");
    let due: chrono::DateTime<chrono::Utc> =
        row["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(due.format("%H:%M").to_string(), ends);
    assert_eq!(s.twilio.requests(), 0);
}

#[tokio::test]
async fn a_provider_error_is_retried_under_the_same_identity() {
    let s = setup(1, "").await;
    let url = &s.daemon.url;
    assert_eq!(ping(url, "L1", PAT, 1).await, 202);
    let text = eventually(15, "the retried text", || async {
        s.twilio.texts().into_iter().next()
    })
    .await;
    assert_eq!(text.body, "Ping 1");
    assert_eq!(s.twilio.requests(), 2);
    let rows = outbox(url).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = eventually(10, "the row sent", || async {
        outbox(url)
            .await
            .into_iter()
            .find(|r| r["status"] == "sent")
    })
    .await;
    assert_eq!(row["attempts"], 2);
    assert!(
        text.status_callback
            .unwrap()
            .ends_with(row["id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn stop_suppresses_the_number_and_start_lifts_it_forged_ones_change_nothing() {
    let s = setup(0, "").await;
    let url = &s.daemon.url;
    assert_eq!(ping(url, "L1", PAT, 1).await, 202);
    eventually(10, "the first text", || async {
        (s.twilio.texts().len() == 1).then_some(())
    })
    .await;
    let suppressions = || async {
        get_json(&format!("{url}/v1/suppressions")).await["suppressions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Forged: wrong token. Refused, nothing suppressed.
    assert_eq!(
        text_in(url, "SMstop0", PAT, "STOP", "not-the-token").await,
        401
    );
    assert!(suppressions().await.is_empty());
    // Signed STOP: suppressed, sms.opted_out raised, the next text skipped.
    assert_eq!(
        text_in(url, "SMstop1", PAT, "Stop", twilio::TOKEN).await,
        200
    );
    let listed = suppressions().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], PAT);
    eventually(10, "the opt-out task", || async {
        task_titles(url, "open")
            .await
            .into_iter()
            .find(|t| t == &format!("{PAT} opted out"))
    })
    .await;
    assert_eq!(ping(url, "L1", PAT, 2).await, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.twilio.texts().len(), 1);
    let runs = get_json(&format!("{url}/v1/runs?record=lead/L1&rule=one%20text")).await;
    assert!(runs.to_string().contains("opted out of texts"), "{runs}");
    // START lifts it.
    assert_eq!(
        text_in(url, "SMstart", PAT, "START", twilio::TOKEN).await,
        200
    );
    assert!(suppressions().await.is_empty());
    assert_eq!(ping(url, "L1", PAT, 3).await, 202);
    let last = eventually(10, "a text after START", || async {
        s.twilio.texts().into_iter().nth(1)
    })
    .await;
    assert_eq!(last.body, "Ping 3");
    // A text from a number never texted is kept, not an error.
    assert_eq!(
        text_in(url, "SMwho", "+15559990000", "who is this?", twilio::TOKEN).await,
        200
    );
    let kept = get_json(&format!("{url}/v1/sources/sms/rejected")).await;
    assert_eq!(kept["rejected"].as_array().map(Vec::len), Some(1), "{kept}");
    assert!(kept.to_string().contains("no record was texted"), "{kept}");
    // The console lists it with the sources' kept payloads.
    let page = reqwest::get(format!("{url}/sources")).await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("no record was texted at +15559990000"),
        "{html}"
    );
}

#[tokio::test]
async fn texts_in_flight_at_a_kill_go_again_with_their_identity() {
    let twilio = Twilio::start(0).await;
    let (dir, flows_dir) = workflow_dir(&flows(&twilio.url, ""));
    let data = dir.path().join("data");
    let daemon = start(&flows_dir, &data);
    let url = daemon.url.clone();
    twilio.delay(Duration::from_secs(2));
    for n in 0..5 {
        let status = ping(&url, &format!("L{n}"), &format!("+1555123000{n}"), n).await;
        assert_eq!(status, 202);
    }
    eventually(10, "texts in flight", || async {
        (twilio.requests() >= 5).then_some(())
    })
    .await;
    daemon.kill();
    twilio.delay(Duration::ZERO);
    let daemon = start(&flows_dir, &data);
    let url = daemon.url.clone();
    let rows = eventually(20, "every row sent", || async {
        let rows = outbox(&url).await;
        (rows.len() == 5 && rows.iter().all(|r| r["status"] == "sent")).then_some(rows)
    })
    .await;
    // Every text reached the provider; any resend names the same row.
    let mut identities: Vec<String> = twilio
        .texts()
        .iter()
        .map(|t| t.status_callback.clone().unwrap())
        .map(|c| c.rsplit_once("row=").unwrap().1.to_owned())
        .collect();
    identities.sort();
    identities.dedup();
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(identities, ids);
    for n in 0..5 {
        let body = format!("Ping {n}");
        assert!(twilio.texts().iter().any(|t| t.body == body), "{body}");
    }
}

#[tokio::test]
async fn the_http_provider_gets_json_and_posts_signed_json_back() {
    let sink = common::sinks::HttpSink::start(0).await;
    let yaml = format!(
        r#"
settings:
  sms: {{ provider: http, url: "{}/texts", token: "${{SMS_TOKEN}}", from: "+15550001111" }}
rules:
  - name: one text
    on: ping.text
    do:
      - sms: {{ body: "Ping {{{{ event.n }}}}" }}
"#,
        sink.url
    );
    let (dir, flows_dir) = workflow_dir(&yaml);
    let daemon = Daemon::start(
        &flows_dir,
        &dir.path().join("data"),
        &[],
        &[("SMS_TOKEN", "generic-provider-token")],
    );
    let url = &daemon.url;
    let status = ping(url, "L1", PAT, 7).await;
    assert_eq!(status, 202);
    let hit = eventually(10, "the text posted", || async {
        sink.hits().into_iter().next()
    })
    .await;
    assert_eq!(
        hit.header("authorization").as_deref(),
        Some("Bearer generic-provider-token")
    );
    let sent: Value = serde_json::from_slice(&hit.body).unwrap();
    let row = hit.header("idempotency-key").unwrap();
    assert_eq!(sent["id"], row.as_str());
    assert_eq!(
        (sent["to"].as_str(), sent["body"].as_str()),
        (Some(PAT), Some("Ping 7"))
    );
    let callback = sent["status_callback"].as_str().unwrap().to_owned();
    // The provider's receipt, signed as a Standard Webhook with the token.
    let post = |body: Value, secret: &'static str| {
        let callback = callback.clone();
        async move {
            let payload = serde_json::to_vec(&body).unwrap();
            let now = chrono::Utc::now().timestamp();
            let signature = dealflow::signature::standard_sign(secret, "msg_1", now, &payload);
            reqwest::Client::new()
                .post(&callback)
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature)
                .header("content-type", "application/json")
                .body(payload)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let failed = json!({"type": "status", "id": "p1", "status": "failed", "error_code": "30006"});
    assert_eq!(post(failed.clone(), "another-token").await, 401);
    assert_eq!(post(failed, "generic-provider-token").await, 200);
    let rows = outbox(url).await;
    assert_eq!(rows[0]["receipt"]["status"], "failed", "{rows:?}");
    assert_eq!(rows[0]["receipt"]["error_code"], "30006");
}

#[tokio::test]
async fn a_wrong_token_is_retried_and_counted_never_the_texts_failure() {
    let twilio = Twilio::start(0).await;
    let (dir, flows_dir) = workflow_dir(&flows(&twilio.url, ""));
    let daemon = Daemon::start(
        &flows_dir,
        &dir.path().join("data"),
        &[],
        &[
            ("TWILIO_ACCOUNT_SID", twilio::ACCOUNT),
            ("TWILIO_AUTH_TOKEN", "a-token-twilio-refuses"),
        ],
    );
    let url = &daemon.url;
    let status = ping(url, "L1", PAT, 1).await;
    assert_eq!(status, 202);
    // A row is read between attempts: while one is being handed over it
    // shows `sending` with that attempt already counted.
    let row = eventually(15, "a retried row", || async {
        outbox(url)
            .await
            .into_iter()
            .find(|r| r["attempts"].as_u64() >= Some(2) && r["status"] != "sending")
    })
    .await;
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("account or token"),
        "{row}"
    );
    let status = get_json(&format!("{url}/v1/status")).await;
    assert!(
        status["deliveries"]["sender_failures"].as_u64() >= Some(1),
        "{status}"
    );
    assert!(
        task_titles(url, "open").await.is_empty(),
        "no sms.failed for our own mistake"
    );
    assert!(
        !status.to_string().contains("a-token-twilio-refuses"),
        "the token is a secret"
    );
}
