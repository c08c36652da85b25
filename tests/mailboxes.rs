//! Mailboxes end to end (SPEC §3.11): the real daemon reads a real IMAP
//! server (a throwaway Dovecot on loopback) and turns replies, bounces and
//! auto-replies into events, exactly once, across kill -9 and outages.

mod common;

use common::imap::Dovecot;
use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::{Value, json};

const SALES: &str = "sales@acme.example";
const ANA: &str = "ana@acme.example";
const PASSWORD: &str = "imap-canary-pw-5d1e";

fn flows(dovecot: &Dovecot, outbox: &str, options: &str, password_var: &str) -> String {
    format!(
        r#"
settings:
  email:
    transport: "maildir:{outbox}"
    from: "Ana Ruiz <ana@acme.example>"
  mailboxes:
    - name: sales
      url: "{url}"
      poll: 2s
      {options}
team:
  people:
    - {{ email: ana@acme.example }}
sequences:
  - name: cold
    for: lead
    steps:
      - {{ id: intro, email: {{ subject: "Hello {{{{ lead.name }}}}", body: "Would a call help?" }} }}
      - wait: 3d
      - {{ id: bump, email: {{ subject: "Again", body: "Still there?", thread: intro }} }}
rules:
  - {{ name: start, for: lead, on: form.submitted, do: [ {{ enroll: cold }} ] }}
  - name: reply-task
    for: lead
    on: email.replied
    do: [ {{ task: {{ title: "Answer {{{{ lead.name }}}}: {{{{ event.snippet }}}}", owner: ana@acme.example }} }} ]
"#,
        url = dovecot.url(SALES, &format!("${{{password_var}}}"))
    )
}

struct Setup {
    dovecot: Dovecot,
    dir: tempfile::TempDir,
    flows: std::path::PathBuf,
    daemon: Option<Daemon>,
}

impl Setup {
    /// A Dovecot with two accounts and a daemon reading `sales` with
    /// these extra mailbox `options` (YAML lines).
    fn start(options: &str) -> Setup {
        Setup::on(
            Dovecot::start(&[(SALES, PASSWORD), (ANA, PASSWORD)]),
            options,
        )
    }

    fn on(dovecot: Dovecot, options: &str) -> Setup {
        let outbox = tempfile::tempdir().unwrap().keep();
        let (dir, flows_dir) = workflow_dir(&flows(
            &dovecot,
            &outbox.display().to_string(),
            options,
            "IMAP_PASSWORD",
        ));
        let mut setup = Setup {
            dovecot,
            dir,
            flows: flows_dir,
            daemon: None,
        };
        setup.run();
        setup
    }

    fn run(&mut self) {
        self.daemon = Some(Daemon::start(
            &self.flows,
            &self.dir.path().join("data"),
            &[],
            &[("IMAP_PASSWORD", PASSWORD)],
        ));
    }

    fn url(&self) -> String {
        self.daemon.as_ref().unwrap().url.clone()
    }

    async fn enroll(&self, id: &str, name: &str, email: &str) -> String {
        let url = self.url();
        let event = json!({ "type": "form.submitted", "record": { "kind": "lead", "id": id, "fields": { "name": name, "email": email } } });
        let (code, _) = post_json(&format!("{url}/v1/events"), event).await;
        assert_eq!(code, 202);
        // The intro's outbox row id is in its Message-ID: <ROW@acme.example>.
        let outbox = format!("{url}/v1/outbox?record=lead/{id}&status=sent");
        let row = eventually(15, &format!("the intro to {id} sent"), || async {
            get_json(&outbox).await["outbox"][0]["id"]
                .as_str()
                .map(String::from)
        })
        .await;
        format!("<{row}@acme.example>")
    }

    async fn enrollment(&self, id: &str) -> Value {
        get_json(&format!("{}/v1/records/lead/{id}", self.url())).await["enrollments"][0].clone()
    }

    async fn wait_exit(&self, id: &str, reason: &str) {
        eventually(20, &format!("{id} to exit with {reason}"), || async {
            let e = self.enrollment(id).await;
            (e["exit_reason"] == reason).then_some(())
        })
        .await;
    }

    async fn mailbox(&self) -> Value {
        get_json(&format!("{}/v1/status", self.url())).await["mailboxes"][0].clone()
    }

    async fn metric(&self, line: &str) -> bool {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains(line)
    }
}

fn reply(from: &str, to_message: &str, id: &str, text: &str) -> String {
    format!(
        "From: Prospect <{from}>\nTo: ana@acme.example\nSubject: Re: Hello\nMessage-ID: <{id}>\nIn-Reply-To: {to_message}\nReferences: {to_message}\nDate: Mon, 2 Mar 2026 10:00:00 +0000\n\n{text}\n\nOn Mon, 2 Mar 2026 at 09:00, Ana <ana@acme.example> wrote:\n> Would a call help?\n"
    )
}

fn bounce(original: &str, status: &str, id: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.prospect.example>\nTo: ana@acme.example\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <{id}>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nThe message could not be delivered.\n\n--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.prospect.example\n\nFinal-Recipient: rfc822; someone@prospect.example\nAction: failed\nStatus: {status}\n\n--b1\nContent-Type: text/rfc822-headers\n\nFrom: Ana Ruiz <ana@acme.example>\nMessage-ID: {original}\nSubject: Hello\n\n--b1--\n"
    )
}

fn out_of_office(to_message: &str, id: &str) -> String {
    format!(
        "From: Lou <lou@prospect.example>\nTo: ana@acme.example\nSubject: Automatic reply: Hello\nAuto-Submitted: auto-replied\nMessage-ID: <{id}>\nIn-Reply-To: {to_message}\n\nI am out of the office until Monday.\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_bounces_and_auto_replies_in_the_mailbox_become_events() {
    let s = Setup::start("after: move:Processed");
    let pat = s.enroll("L1", "Pat", "pat@prospect.example").await;
    let sam = s.enroll("L2", "Sam", "sam@prospect.example").await;
    let kim = s.enroll("L3", "Kim", "kim@prospect.example").await;
    let lou = s.enroll("L4", "Lou", "lou@prospect.example").await;

    s.dovecot.deliver(
        SALES,
        &reply(
            "pat@prospect.example",
            &pat,
            "r1@prospect.example",
            "Yes, call me Tuesday.",
        ),
    );
    s.wait_exit("L1", "email.replied").await;
    let tasks = common::task_titles(&s.url(), "open").await;
    assert!(
        tasks.contains(&"Answer Pat: Yes, call me Tuesday.".to_owned()),
        "{tasks:?}"
    );

    s.dovecot
        .deliver(SALES, &bounce(&sam, "5.1.1", "b1@mx.prospect.example"));
    s.wait_exit("L2", "email.bounced").await;
    let suppressed = get_json(&format!("{}/v1/suppressions", s.url())).await;
    assert!(
        suppressed.to_string().contains("sam@prospect.example"),
        "{suppressed}"
    );

    s.dovecot
        .deliver(SALES, &bounce(&kim, "4.4.1", "b2@mx.prospect.example"));
    s.dovecot
        .deliver(SALES, &out_of_office(&lou, "ooo@prospect.example"));
    eventually(20, "both read", || async {
        (s.mailbox().await["handled"].as_u64() == Some(4)).then_some(())
    })
    .await;
    let suppressed = get_json(&format!("{}/v1/suppressions", s.url())).await;
    assert!(
        !suppressed.to_string().contains("kim@prospect.example"),
        "a 4.x.x bounce suppressed: {suppressed}"
    );
    // An out-of-office is recorded but does not stop the cadence.
    assert_eq!(s.enrollment("L4").await["status"], "active");
    assert!(
        s.metric(r#"dealflow_mailbox_messages_total{mailbox="sales",outcome="auto_reply"} 1"#)
            .await
    );

    // Something that is about no message of ours is left alone.
    s.dovecot.deliver(SALES, "From: news@vendor.example\nSubject: Our newsletter\nMessage-ID: <n1@vendor.example>\n\nHello\n");
    eventually(20, "the newsletter read", || async {
        s.metric(r#"dealflow_mailbox_messages_total{mailbox="sales",outcome="ignored"} 1"#)
            .await
            .then_some(())
    })
    .await;
    let status = s.mailbox().await;
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["handled"], 4, "{status}");
    // `after: move:` moved the four it handled, and only those.
    assert_eq!(
        (
            s.dovecot.count(SALES, ".Processed"),
            s.dovecot.count(SALES, "")
        ),
        (4, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_another_address_counts_only_with_thread_or_sender() {
    for (matching, counts) in [("thread", false), ("thread_or_sender", true)] {
        let s = Setup::start(&format!("match: {matching}"));
        s.enroll("L1", "Pat", "pat@prospect.example").await;
        // From her phone: no In-Reply-To, but from the lead's address.
        s.dovecot.deliver(SALES, "From: Pat <Pat@Prospect.example>\nSubject: saw your note\nMessage-ID: <phone1@prospect.example>\n\nCall me after 3.\n");
        eventually(20, "the message read", || async {
            let read = s.mailbox().await["last_read_at"].is_string()
                && (s.metric(r#"outcome="ignored"} 1"#).await
                    || s.metric(r#"outcome="reply"} 1"#).await);
            read.then_some(())
        })
        .await;
        if counts {
            s.wait_exit("L1", "email.replied").await;
        } else {
            assert_eq!(s.enrollment("L1").await["status"], "active", "{matching}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_handled_once_across_a_kill_9_and_a_renumbered_folder() {
    let mut s = Setup::start("match: thread");
    let pat = s.enroll("L1", "Pat", "pat@prospect.example").await;
    s.dovecot.deliver(
        SALES,
        &reply(
            "pat@prospect.example",
            &pat,
            "r9@prospect.example",
            "Sounds good.",
        ),
    );
    // Killed as the message arrives: before, during or after its commit.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    s.daemon.take().unwrap().kill();
    s.run();
    s.wait_exit("L1", "email.replied").await;
    // The same message read again (a new position is never written before
    // its events) raises nothing twice.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let tasks = common::task_titles(&s.url(), "open").await;
    assert_eq!(
        tasks.iter().filter(|t| t.starts_with("Answer Pat")).count(),
        1,
        "{tasks:?}"
    );

    // The server renumbers the folder (a new UIDVALIDITY: Dovecot makes
    // one when its UID list and index are gone): dealflow reads it all again
    // at its next start, and the reply it handled is a duplicate.
    let sam = s.enroll("L2", "Sam", "sam@prospect.example").await;
    s.dovecot.stop();
    s.daemon.take().unwrap().kill();
    for entry in std::fs::read_dir(s.dovecot.maildir(SALES))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("dovecot") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    s.dovecot.deliver(
        SALES,
        &reply(
            "sam@prospect.example",
            &sam,
            "r10@prospect.example",
            "Me too.",
        ),
    );
    s.dovecot.run();
    s.run();
    s.wait_exit("L2", "email.replied").await;
    let status = s.mailbox().await;
    assert_eq!(status["handled"], 2, "read again from the start: {status}");
    let tasks = common::task_titles(&s.url(), "open").await;
    let pats = tasks.iter().filter(|t| t.starts_with("Answer Pat")).count();
    assert_eq!(pats, 1, "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_idle_is_polled() {
    let s = Setup::on(
        Dovecot::start_with(&[(SALES, PASSWORD)], false),
        "after: mark_seen",
    );
    let pat = s.enroll("L1", "Pat", "pat@prospect.example").await;
    eventually(20, "polling", || async {
        (s.mailbox().await["state"] == "polling").then_some(())
    })
    .await;
    s.dovecot.deliver(
        SALES,
        &reply(
            "pat@prospect.example",
            &pat,
            "p1@prospect.example",
            "Polled.",
        ),
    );
    s.wait_exit("L1", "email.replied").await;
    // `after: mark_seen` flagged it: Maildir keeps the flag in the file name.
    let seen = eventually(10, "the seen flag", || async {
        let names: Vec<String> = std::fs::read_dir(s.dovecot.maildir(SALES).join("cur"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names
            .into_iter()
            .find(|n| n.contains(":2,") && n.ends_with('S'))
    })
    .await;
    assert!(seen.contains("dealflow-test"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_outage_are_shown_and_survived() {
    // A wrong password: the daemon stays up and says so, without the password.
    let dovecot = Dovecot::start(&[(SALES, PASSWORD)]);
    let outbox = tempfile::tempdir().unwrap();
    let (dir, flows_dir) = workflow_dir(&flows(
        &dovecot,
        &outbox.path().display().to_string(),
        "match: thread",
        "IMAP_PASSWORD",
    ));
    let wrong = "wrong-canary-pw-77c3";
    // Logged at the most detailed level a user can ask for.
    let log_path = dir.path().join("daemon.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(&flows_dir)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("IMAP_PASSWORD", wrong)
        .env("RUST_LOG", "trace")
        .env_remove("DEALFLOW_TOKEN")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let daemon = Daemon::spawn(command);
    let status = eventually(20, "the login error", || async {
        let s = get_json(&format!("{}/v1/status", daemon.url)).await;
        (s["mailboxes"][0]["state"] == "error").then_some(s)
    })
    .await;
    let text = status.to_string();
    assert!(text.contains("logging in"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert_eq!(
        get_json(&format!("{}/healthz", daemon.url)).await,
        Value::Null
    );
    drop(daemon);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("A mailbox could not be read"), "{log}");
    assert!(!log.contains(wrong), "the password is in the log");

    // The server goes away and comes back: error, then idle, then a reply read.
    let mut s = Setup::start("match: thread");
    let pat = s.enroll("L1", "Pat", "pat@prospect.example").await;
    eventually(20, "idle", || async {
        (s.mailbox().await["state"] == "idle").then_some(())
    })
    .await;
    s.dovecot.stop();
    eventually(30, "the outage seen", || async {
        (s.mailbox().await["state"] == "error").then_some(())
    })
    .await;
    s.dovecot.deliver(
        SALES,
        &reply(
            "pat@prospect.example",
            &pat,
            "r5@prospect.example",
            "Back again.",
        ),
    );
    s.dovecot.run();
    s.wait_exit("L1", "email.replied").await;
    let status = s.mailbox().await;
    assert!(status["last_error"]["error"].is_string(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_messages_are_skipped_and_never_block_the_mailbox() {
    let s = Setup::start("match: thread");
    let pat = s.enroll("L1", "Pat", "pat@prospect.example").await;
    // No From at all; binary junk; a 6 MB attachment; a reply without a
    // Message-ID (named by its place in the folder instead).
    s.dovecot.deliver(SALES, "Subject: no sender\n\nhello\n");
    s.dovecot.deliver(SALES, "\u{1}\u{2}garbage\u{ff}\n\n\n");
    let attachment = "QUFB".repeat(2_000_000);
    s.dovecot.deliver(
        SALES,
        &format!("From: big@vendor.example\nSubject: Big file\nMessage-ID: <big@vendor.example>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"z\"\n\n--z\nContent-Type: text/plain\n\nsee attached\n--z\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n{attachment}\n--z--\n"),
    );
    let no_id = reply("pat@prospect.example", &pat, "unused", "Without an id.")
        .replace("Message-ID: <unused>\n", "");
    s.dovecot.deliver(SALES, &no_id);
    s.wait_exit("L1", "email.replied").await;
    let status = s.mailbox().await;
    assert!(status["skipped"].as_u64() >= Some(1), "{status}");
    assert!(
        status["last_skipped"]
            .as_str()
            .is_some_and(|w| w.contains("not a readable message")),
        "{status}"
    );
    assert_eq!(status["handled"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaps_and_starttls_check_the_server_certificate() {
    let dovecot = Dovecot::start_tls(&[(SALES, PASSWORD), (ANA, PASSWORD)]);
    let tls_port = dovecot.tls_port.unwrap();
    let yaml = |outbox: &str| {
        flows(&dovecot, outbox, "match: thread", "IMAP_PASSWORD").replace(
            "  mailboxes:\n",
            &format!(
                "  mailboxes:\n    - {{ name: tls, url: \"imaps://ana%40acme.example:${{IMAP_PASSWORD}}@127.0.0.1:{tls_port}/INBOX\", poll: 2s }}\n    - {{ name: starttls, url: \"imap://ana%40acme.example:${{IMAP_PASSWORD}}@127.0.0.1:{}/INBOX?tls=required\", poll: 2s }}\n",
                dovecot.port
            ),
        )
    };
    let outbox = tempfile::tempdir().unwrap();
    let (dir, flows_dir) = workflow_dir(&yaml(&outbox.path().display().to_string()));
    let start = |trust: bool| {
        let mut env = vec![("IMAP_PASSWORD", PASSWORD.to_owned())];
        if trust {
            env.push(("SSL_CERT_FILE", dovecot.ca_file().display().to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Daemon::start(&flows_dir, &dir.path().join("data"), &[], &env)
    };
    let states = |url: String| async move {
        let status = get_json(&format!("{url}/v1/status")).await;
        let by_name = |name: &str| {
            status["mailboxes"]
                .as_array()
                .and_then(|l| l.iter().find(|m| m["name"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        (by_name("tls"), by_name("starttls"))
    };

    // A certificate from a CA the daemon does not know is refused.
    let daemon = start(false);
    let (tls, starttls) = eventually(20, "both refused", || async {
        let (tls, starttls) = states(daemon.url.clone()).await;
        (tls["state"] == "error" && starttls["state"] == "error").then_some((tls, starttls))
    })
    .await;
    for m in [&tls, &starttls] {
        let error = m["last_error"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("certificate"), "{m}");
    }
    daemon.kill();

    // Trusted (SSL_CERT_FILE, as an admin with an internal CA sets it): both connect.
    let daemon = start(true);
    eventually(20, "both idle", || async {
        let (tls, starttls) = states(daemon.url.clone()).await;
        (tls["state"] == "idle" && starttls["state"] == "idle").then_some(())
    })
    .await;
}
