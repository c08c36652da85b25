//! Backup, restore and check with the real binary (SPEC §9): a backup of a running
//! daemon taken while events keep arriving, restored into a new folder, is
//! a whole daemon: records, tasks, enrollments, outbox rows, suppressions,
//! event ids and the unsubscribe key. Bad files and occupied folders are
//! refused with nothing written.

mod common;

use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::json;
use std::process::Command;

const FLOWS: &str = r#"
settings:
  email:
    transport: "maildir:./outbox-unused"
    from: "Ana Ruiz <ana@acme.example>"
team:
  people:
    - { email: ana@acme.example }
sequences:
  - name: cold
    for: lead
    steps:
      - { id: intro, email: { subject: "Hello", body: "Would a call help?" } }
      - wait: 3d
      - { id: bump, email: { subject: "Again", body: "Still there?" } }
rules:
  - name: start
    for: lead
    on: form.submitted
    do:
      - enroll: cold
      - task: { title: "Call {{ lead.id }}", owner: ana@acme.example }
"#;

fn dealflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(args)
        .env_remove("DEALFLOW_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_busy_daemon_restores_into_a_whole_daemon() {
    let (dir, flows) = workflow_dir(&FLOWS.replace(
        "./outbox-unused",
        &format!("{}/outbox", std::env::temp_dir().display()),
    ));
    let data = dir.path().join("data");
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let url = daemon.url.clone();
    for i in 0..200 {
        let event = json!({ "id": format!("form-{i}"), "type": "form.submitted", "record": { "kind": "lead", "id": format!("L{i}"), "fields": { "email": format!("p{i}@prospect.example") } } });
        assert_eq!(post_json(&format!("{url}/v1/events"), event).await.0, 202);
    }
    eventually(20, "200 tasks", || async {
        (common::task_titles(&url, "open").await.len() == 200).then_some(())
    })
    .await;

    // Events keep arriving while the backup runs.
    let writer_url = url.clone();
    let writer = tokio::spawn(async move {
        for i in 0..300 {
            let event = json!({ "id": format!("during-{i}"), "type": "page.viewed", "record": { "kind": "lead", "id": "L0" } });
            post_json(&format!("{writer_url}/v1/events"), event).await;
        }
    });
    let file = dir.path().join("acme.backup");
    let out = Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["backup", "--url", &url, "--out"])
        .arg(&file)
        .env_remove("DEALFLOW_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum verified"));
    writer.await.unwrap();
    let before = get_json(&format!("{url}/v1/records/lead/L7")).await;
    let timers_before = timers_pending(&url).await;
    assert!(timers_before >= 200, "{timers_before}");
    daemon.kill();

    // Into a new folder: the restored daemon has everything.
    let restored = dir.path().join("restored");
    let out = dealflow(&[
        "restore",
        file.to_str().unwrap(),
        "--data",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(data.join("unsubscribe.key")).unwrap(),
        std::fs::read(restored.join("unsubscribe.key")).unwrap()
    );
    let out = dealflow(&["check", "--data", restored.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("is sound"),
        "{stdout}"
    );
    let daemon = Daemon::start(&flows, &restored, &[], &[]);
    let url = daemon.url.clone();
    // A store a daemon holds is not checked under it.
    let out = dealflow(&["check", "--data", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another dealflow process"));
    let after = get_json(&format!("{url}/v1/records/lead/L7")).await;
    assert_eq!(after["record"], before["record"]);
    assert_eq!(after["enrollments"], before["enrollments"]);
    assert_eq!(common::task_titles(&url, "open").await.len(), 200);
    let outbox = get_json(&format!("{url}/v1/outbox?record=lead/L7")).await;
    assert!(!outbox["outbox"].as_array().unwrap().is_empty(), "{outbox}");
    // Deduplication still knows the ids it had seen.
    let again = json!({ "id": "form-7", "type": "form.submitted", "record": { "kind": "lead", "id": "L7" } });
    let (code, answer) = post_json(&format!("{url}/v1/events"), again).await;
    assert_eq!(
        (code.as_u16(), answer["duplicate"].as_bool()),
        (202, Some(true))
    );
    // Timers survive too: each bump is still due in three days.
    assert_eq!(timers_pending(&url).await, timers_before);
}

async fn timers_pending(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("dealflow_timers_pending "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_bad_files_and_occupied_folders_writing_nothing() {
    let (dir, flows) = workflow_dir(FLOWS);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let file = dir.path().join("good.backup");
    let out = Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["backup", "--url", &daemon.url, "--out"])
        .arg(&file)
        .env_remove("DEALFLOW_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
        ("foreign", b"%PDF-1.7 not a backup".to_vec()),
    ];
    for (name, bytes) in cases {
        let bad = dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join(format!("into-{name}"));
        let out = dealflow(&[
            "restore",
            bad.to_str().unwrap(),
            "--data",
            target.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("cannot be restored") && !stderr.contains("panicked"),
            "{name}: {stderr}"
        );
        assert!(!target.exists(), "{name}: something was written");
    }
    // A folder that is no store is said to be none.
    let out = dealflow(&[
        "check",
        "--data",
        dir.path().join("flows").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no dealflow store"));
    // An occupied folder (the daemon's own) is refused.
    let out = dealflow(&[
        "restore",
        file.to_str().unwrap(),
        "--data",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}
