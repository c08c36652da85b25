//! Mailbox benchmark (issue 21): a backlog of 10,000 messages, 1,000 of them
//! replies to emails the daemon sent, waiting in one IMAP folder (a real
//! Dovecot on loopback). The mailbox is added by a reload; the benchmark
//! times from the reload until every message is read and every reply's
//! event is handled, and reports the daemon's peak RSS.
//!
//! Run: `cargo build --release && cargo bench --bench mailbox`
//! (BENCH_MESSAGES and BENCH_REPLIES change the sizes).

// A benchmark measures wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

#[path = "support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/common/imap.rs"]
mod imap;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{get_json, start, wait_handled};

const USER: &str = "sales@acme.example";

fn flows(outbox: &str, mailbox: Option<&str>) -> String {
    let mailboxes = mailbox
        .map(|url| format!("  mailboxes:\n    - {{ name: sales, url: \"{url}\", poll: 5s }}\n"))
        .unwrap_or_default();
    format!(
        r#"
settings:
  email:
    transport: "maildir:{outbox}"
    from: "Ana Ruiz <ana@acme.example>"
{mailboxes}
sequences:
  - name: cold
    for: lead
    steps:
      - {{ id: intro, email: {{ subject: "Hello", body: "Would a call help?" }} }}
      - wait: 30d
      - {{ id: bump, email: {{ subject: "Again", body: "Still there?" }} }}
rules:
  - {{ name: start, for: lead, on: form.submitted, do: [ {{ enroll: cold }} ] }}
"#
    )
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hwm_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::main]
async fn main() {
    let messages = env_number("BENCH_MESSAGES", 10_000);
    let replies = env_number("BENCH_REPLIES", 1_000).min(messages);
    let dovecot = imap::Dovecot::start(&[(USER, "pw")]);
    let tmp = tempfile::tempdir().unwrap();
    let flows_dir = tmp.path().join("flows");
    std::fs::create_dir_all(&flows_dir).unwrap();
    let outbox = tmp.path().join("sent").display().to_string();
    std::fs::write(flows_dir.join("flows.yaml"), flows(&outbox, None)).unwrap();
    let daemon = start(&flows_dir, &tmp.path().join("data"));
    let http = reqwest::Client::new();

    // The emails the replies answer.
    for chunk in (0..replies).collect::<Vec<_>>().chunks(500) {
        let events: Vec<_> = chunk
            .iter()
            .map(|i| json!({ "type": "form.submitted", "record": { "kind": "lead", "id": format!("L{i}"), "fields": { "email": format!("p{i}@prospect.example") } } }))
            .collect();
        http.post(format!("{}/v1/events", daemon.url))
            .json(&events)
            .send()
            .await
            .unwrap();
    }
    wait_handled(&http, &daemon.url).await;
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    while rows.len() < replies {
        let mut url = format!("{}/v1/outbox?status=sent&limit=1000", daemon.url);
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page = get_json(&http, &url).await;
        rows.extend(
            page["outbox"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["id"].as_str().map(String::from)),
        );
        after = page["next"].as_str().map(String::from);
        if after.is_none() && rows.len() < replies {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rows.clear();
        }
    }

    // The backlog: every tenth message a reply, the rest mail about nothing of ours.
    let every = messages / replies.max(1);
    let mut replied = 0;
    for n in 0..messages {
        let raw = if n % every == 0 && replied < replies {
            replied += 1;
            let row = &rows[replied - 1];
            format!(
                "From: p@prospect.example\nTo: ana@acme.example\nSubject: Re: Hello\nMessage-ID: <r{n}@prospect.example>\nIn-Reply-To: <{row}@acme.example>\n\nYes, let's talk.\n\nOn Mon, Ana wrote:\n> Would a call help?\n"
            )
        } else {
            format!(
                "From: news{n}@vendor.example\nTo: ana@acme.example\nSubject: Newsletter {n}\nMessage-ID: <n{n}@vendor.example>\n\n{}\n",
                "Lorem ipsum dolor sit amet. ".repeat(40)
            )
        };
        dovecot.deliver(USER, &raw);
    }
    let before = hwm_mib(daemon.child.id());

    // Add the mailbox and time the backlog.
    let url = dovecot.url(USER, "pw");
    std::fs::write(flows_dir.join("flows.yaml"), flows(&outbox, Some(&url))).unwrap();
    let started = Instant::now();
    let r = http
        .post(format!("{}/v1/reload", daemon.url))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    loop {
        let status = get_json(&http, &format!("{}/v1/status", daemon.url)).await;
        let mailbox = &status["mailboxes"][0];
        if mailbox["handled"].as_u64() == Some(replied as u64) && mailbox["state"] == "idle" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "stuck: {mailbox}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_handled(&http, &daemon.url).await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{messages} messages ({replied} replies) read, classified and handled in {took:.1} s ({:.0} messages/s); daemon peak RSS {} MiB (before the mailbox: {before} MiB)",
        messages as f64 / took,
        hwm_mib(daemon.child.id())
    );
}
