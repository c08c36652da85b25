//! The full-disk drill (issue 24): the daemon's data folder is on a small
//! tmpfs that fills up. Ingest answers 503 `disk_full` and changes nothing;
//! every event answered 202 before is kept; once there is room again the
//! daemon reopens its store by itself (on the same address) and takes
//! events again. Mounting needs root, as the apt-get of the other drills.

mod common;

use common::{Daemon, eventually, get_json, workflow_dir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the full-disk drill mounts a small tmpfs, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

const FLOWS: &str = r#"
rules:
  - name: note
    for: lead
    on: form.submitted
    do:
      - set: { seen: "yes" }
"#;

/// Posts a batch of leads; answers the status and the answer.
async fn post(url: &str, batch: usize) -> (u16, Value) {
    let events: Vec<Value> = (0..50)
        .map(|n| {
            json!({"type": "form.submitted", "record": {"kind": "lead", "id": format!("L{batch}-{n}"),
                   "fields": {"email": format!("p{batch}-{n}@x.example"), "notes": "x".repeat(2_000)}}})
        })
        .collect();
    let sent = reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .json(&events)
        .send()
        .await;
    // While the daemon starts again, nothing listens for a moment.
    let Ok(response) = sent else {
        return (0, Value::Null);
    };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn fill(path: &Path, mib: usize) {
    std::fs::write(path, vec![7u8; mib << 20]).unwrap();
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_and_recovers_by_itself() {
    let disk = Tmpfs::mount(112);
    let (_flows_dir, flows) = workflow_dir(FLOWS);
    let data = disk.path.join("data");
    let daemon = Daemon::start(&flows, &data, &[], &[]);
    let url = daemon.url.clone();
    // Leave about 10 MiB for the store.
    let filler = disk.path.join("filler");
    fill(&filler, 100);
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let batch = acknowledged.len();
        assert!(batch < 5_000, "the disk never filled");
        match post(&url, batch).await {
            (202, _) => acknowledged.push(batch),
            (503, answer) => break answer,
            other => panic!("unexpected answer {other:?}"),
        }
    };
    assert_eq!(refusal["error"]["code"], "disk_full", "{refusal}");
    assert!(!acknowledged.is_empty());
    // Still full: still refused, nothing changed.
    assert_eq!(post(&url, 99_999).await.0, 503);
    std::fs::remove_file(&filler).unwrap();
    // Room again: the daemon reopens its store on the same address.
    eventually(60, "events taken again", || async {
        (post(&url, 100_000).await.0 == 202).then_some(())
    })
    .await;
    // Every acknowledged event was kept, and is handled.
    for batch in &acknowledged {
        for n in [0, 49] {
            let record = eventually(60, "an acknowledged lead", || async {
                let r = get_json(&format!("{url}/v1/records/lead/L{batch}-{n}")).await;
                (r["record"]["seen"] == "yes").then_some(r)
            })
            .await;
            assert_eq!(record["record"]["email"], format!("p{batch}-{n}@x.example"));
        }
    }
    let refused = get_json(&format!("{url}/v1/records/lead/L99999-0")).await;
    assert!(refused.get("record").is_none(), "{refused}");
    drop(daemon);
}
