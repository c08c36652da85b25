//! Hot reload with the real daemon: saved files take effect, broken ones
//! never replace working rules, editors' and git's ways of writing files
//! reload once, enrollments are never stranded, and under load no event is
//! lost or evaluated against a mix of versions.

mod common;

use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

fn rules(title: &str) -> String {
    format!(
        r#"
rules:
  - name: greet
    for: lead
    on: signed.up
    do: [ {{ task: {{ title: "{title} {{{{ lead.id }}}}" }} }} ]
"#
    )
}

async fn send(url: &str, id: &str) {
    let event = json!({ "type": "signed.up", "record": { "kind": "lead", "id": id } });
    let (status, body) = post_json(&format!("{url}/v1/events"), event).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
}

async fn status(url: &str) -> Value {
    get_json(&format!("{url}/v1/status")).await
}

async fn wait_for_version_change(url: &str, from: &Value) -> Value {
    eventually(5, "a reload", || async {
        let s = status(url).await;
        (s["version"] != *from).then_some(s)
    })
    .await
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn a_saved_rule_runs_a_broken_file_is_kept_out_and_a_fix_recovers() {
    let (dir, flows) = workflow_dir(&rules("v1"));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    let first = status(&url).await["version"].clone();
    write(&flows.join("flows.yaml"), &rules("v2"));
    wait_for_version_change(&url, &first).await;
    send(&url, "L1").await;
    eventually(2, "the new rule", || async {
        common::task_titles(&url, "all")
            .await
            .contains(&"v2 L1".to_owned())
            .then_some(())
    })
    .await;

    // A broken file: the running rules keep working, the error is shown.
    write(
        &flows.join("broken.yaml"),
        "rules:\n  - name: x\n    on: a\n    do: [ { sett: {} } ]\n",
    );
    let failed = eventually(5, "the failed reload", || async {
        let s = status(&url).await;
        (!s["last_reload_error"].is_null()).then_some(s)
    })
    .await;
    let shown = failed["last_reload_error"]["diagnostics"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(shown.starts_with("broken.yaml:4:"), "{shown}");
    assert!(shown.contains("sett"), "{shown}");
    send(&url, "L2").await;
    eventually(2, "the old rule still running", || async {
        common::task_titles(&url, "all")
            .await
            .contains(&"v2 L2".to_owned())
            .then_some(())
    })
    .await;
    let (code, body) = post_json(&format!("{url}/v1/reload"), json!({})).await;
    assert_eq!(code, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "reload_failed");

    // The fix clears the error.
    std::fs::remove_file(flows.join("broken.yaml")).unwrap();
    eventually(5, "the recovery", || async {
        status(&url).await["last_reload_error"]
            .is_null()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_vim_style_save_and_a_git_checkout_each_reload_once() {
    let (dir, flows) = workflow_dir(&rules("v1"));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    let succeeded = |s: &Value| s["reloads"]["succeeded"].as_u64().unwrap();
    let before = status(&url).await;
    // vim: write a temp file, rename it over the original.
    let tmp = flows.join(".flows.yaml.swp");
    write(&tmp, &rules("vim"));
    std::fs::rename(&tmp, flows.join("flows.yaml")).unwrap();
    let after = wait_for_version_change(&url, &before["version"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        succeeded(&status(&url).await),
        succeeded(&before) + 1,
        "{after}"
    );

    // git checkout of a branch that changes three files.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(&flows)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    write(&flows.join("a.yaml"), "rules: []\n");
    write(&flows.join("b.yaml"), "rules: []\n");
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    git(&["checkout", "-qb", "other"]);
    write(&flows.join("flows.yaml"), &rules("git"));
    write(&flows.join("a.yaml"), "sequences: []\n");
    write(&flows.join("b.yaml"), "pipelines: []\n");
    git(&["commit", "-qam", "two"]);
    git(&["checkout", "-q", "main"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_main = status(&url).await;
    git(&["checkout", "-q", "other"]);
    wait_for_version_change(&url, &on_main["version"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(succeeded(&status(&url).await), succeeded(&on_main) + 1);
    send(&url, "L1").await;
    eventually(2, "the branch's rule", || async {
        common::task_titles(&url, "all")
            .await
            .contains(&"git L1".to_owned())
            .then_some(())
    })
    .await;
}

const SEQUENCE: &str = r#"
sequences:
  - name: slow
    for: lead
    steps:
      - { id: a, task: { title: "a" } }
      - wait: 1h
      - { id: b, task: { title: "b" } }
rules:
  - name: start
    for: lead
    on: signed.up
    do: [ { enroll: slow } ]
"#;

#[tokio::test]
async fn a_reload_that_strands_enrollments_is_refused_and_a_rename_carries_them() {
    let (dir, flows) = workflow_dir(SEQUENCE);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    for id in ["L1", "L2"] {
        send(&url, id).await;
    }
    eventually(5, "both waiting on b", || async {
        let r = get_json(&format!("{url}/v1/records/lead/L2")).await;
        (r["enrollments"][0]["next_step"] == "b").then_some(())
    })
    .await;
    let running = status(&url).await["version"].clone();
    write(
        &flows.join("flows.yaml"),
        &SEQUENCE.replace("id: b,", "id: c,"),
    );
    let refused = eventually(5, "the refusal", || async {
        let s = status(&url).await;
        (!s["last_reload_error"].is_null()).then_some(s)
    })
    .await;
    let message = refused["last_reload_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 enrollment(s) of slow wait on step \"b\""),
        "{message}"
    );
    assert_eq!(refused["version"], running, "nothing changed");

    write(
        &flows.join("flows.yaml"),
        &SEQUENCE.replace("id: b,", "id: c, renamed_from: b,"),
    );
    wait_for_version_change(&url, &running).await;
    let record = get_json(&format!("{url}/v1/records/lead/L1")).await;
    assert_eq!(record["enrollments"][0]["next_step"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_event_and_mix_no_versions() {
    let two_rules = |v: &str| {
        format!(
            "rules:\n  - name: one\n    for: lead\n    on: signed.up\n    do: [ {{ set: {{ one: \"{v}\" }} }} ]\n  - name: two\n    for: lead\n    on: signed.up\n    do: [ {{ set: {{ two: \"{v}\" }} }} ]\n"
        )
    };
    let (dir, flows) = workflow_dir(&two_rules("v0"));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    let mut versions = BTreeSet::new();
    versions.insert(status(&url).await["version"].as_str().unwrap().to_owned());
    let load = {
        let url = url.clone();
        tokio::spawn(async move {
            for i in 0..600 {
                send(&url, &format!("L{i}")).await;
            }
        })
    };
    for v in 1..=4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        write(&flows.join("flows.yaml"), &two_rules(&format!("v{v}")));
        let (code, body) = post_json(&format!("{url}/v1/reload"), json!({})).await;
        assert_eq!(code, reqwest::StatusCode::OK, "{body}");
        versions.insert(body["version"].as_str().unwrap().to_owned());
    }
    load.await.unwrap();
    eventually(10, "every event handled", || async {
        let s = status(&url).await;
        (s["events_handled"] == s["events_stored"]).then_some(())
    })
    .await;
    let mut by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = get_json(&format!(
            "{url}/v1/runs?limit=500{}",
            after
                .as_ref()
                .map(|a| format!("&after={a}"))
                .unwrap_or_default()
        ))
        .await;
        for run in page["runs"].as_array().unwrap() {
            by_event
                .entry(run["event_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(run["version"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let signed_up = by_event.len();
    assert_eq!(signed_up, 600, "every event ran its rules");
    for (event, seen) in &by_event {
        assert_eq!(seen.len(), 1, "event {event} ran under {seen:?}");
        assert!(seen.is_subset(&versions), "{seen:?} not in {versions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_what_a_reload_would_change_and_whether_it_is_refused() {
    let (dir, flows) = workflow_dir(SEQUENCE);
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    send(&url, "L1").await;
    eventually(5, "waiting on b", || async {
        let r = get_json(&format!("{url}/v1/records/lead/L1")).await;
        (r["enrollments"][0]["next_step"] == "b").then_some(())
    })
    .await;
    let proposal = tempfile::tempdir().unwrap();
    let plan = |yaml: String| {
        let url = url.clone();
        let folder = proposal.path().to_path_buf();
        async move {
            write(&folder.join("flows.yaml"), &yaml);
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
                    .args(["plan", &folder.to_string_lossy(), "--url", &url])
                    .env_remove("DEALFLOW_TOKEN")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let refused = plan(SEQUENCE.replace("id: b,", "id: c,")).await;
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("- step b (1 waiting: REFUSED"), "{text}");
    assert!(
        text.contains("The reload would be REFUSED: 1 enrollment(s) of slow wait on step \"b\""),
        "{text}"
    );
    let accepted = plan(
        SEQUENCE.replace("id: b,", "id: c, renamed_from: b,")
            + "  - name: extra\n    on: x\n    do: [ { emit: { type: y2 } } ]\n",
    )
    .await;
    let text = String::from_utf8_lossy(&accepted.stdout).into_owned();
    assert_eq!(accepted.status.code(), Some(0), "{text}");
    assert!(text.contains("rules:\n  + extra"), "{text}");
    assert!(text.contains("continue at c (renamed_from)"), "{text}");
    assert!(text.ends_with("The reload would be accepted.\n"), "{text}");
    // The daemon compiles the folder: its errors come back with positions.
    let broken = plan(SEQUENCE.replace("steps:", "stepz:")).await;
    let text = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.starts_with("The reload would fail: "), "{text}");
    assert!(text.contains("flows.yaml:"), "{text}");
}

#[tokio::test]
async fn a_folder_gone_for_a_while_and_a_burst_of_saves_leave_the_rules_running() {
    let (dir, flows) = workflow_dir(&rules("v1"));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    let moved = dir.path().join("flows.moved");
    std::fs::rename(&flows, &moved).unwrap();
    eventually(5, "the missing folder reported", || async {
        let s = status(&url).await;
        (!s["last_reload_error"].is_null()).then_some(())
    })
    .await;
    send(&url, "L1").await;
    eventually(2, "the running rules", || async {
        common::task_titles(&url, "all")
            .await
            .contains(&"v1 L1".to_owned())
            .then_some(())
    })
    .await;
    std::fs::rename(&moved, &flows).unwrap();
    write(&flows.join("flows.yaml"), &rules("back"));
    eventually(5, "the folder back and reloaded", || async {
        let s = status(&url).await;
        s["last_reload_error"].is_null().then_some(())
    })
    .await;

    // A thousand saves in a second: a few reloads, the last content wins.
    let before = status(&url).await["reloads"]["succeeded"].as_u64().unwrap();
    for i in 0..1000 {
        write(&flows.join("flows.yaml"), &rules(&format!("burst{i}")));
    }
    send(&url, "L2").await;
    eventually(5, "the last save running", || async {
        send(&url, "L3").await;
        common::task_titles(&url, "all")
            .await
            .contains(&"burst999 L3".to_owned())
            .then_some(())
    })
    .await;
    let reloads = status(&url).await["reloads"]["succeeded"].as_u64().unwrap() - before;
    assert!(reloads <= 20, "{reloads} reloads for one burst");
}

/// Bytes the process has read through read(2) and friends, from /proc.
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_idle_daemon_reads_nothing_and_one_save_is_one_reload() {
    // A broken second file: before the fix, the watcher's own reads of it
    // asked for reload after failed reload, about ten a second. It is saved
    // at once, before the watch may have started: that save is not lost.
    let (dir, flows) = workflow_dir(&rules("v1"));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], &[]);
    let url = daemon.url.clone();
    write(
        &flows.join("broken.yaml"),
        "rules:\n  - name: x\n    on: a\n    do: [ { sett: {} } ]\n",
    );
    eventually(15, "the failed reload", || async {
        let s = status(&url).await;
        (s["reloads"]["failed"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    // Let the debouncer settle, then watch the daemon sit still.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = daemon.child.id();
    let (read_before, reloads_before) = (bytes_read(pid), status(&url).await["reloads"].clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (read_after, reloads_after) = (bytes_read(pid), status(&url).await["reloads"].clone());
    assert_eq!(reloads_after, reloads_before, "an idle daemon reloaded");
    // The status requests themselves are a few hundred bytes.
    let read = read_after - read_before;
    assert!(read < 16 * 1024, "an idle daemon read {read} bytes in 3 s");

    // One save is one reload.
    write(
        &flows.join("broken.yaml"),
        &rules("v2").replace("greet", "greet-2"),
    );
    eventually(15, "the reload after the save", || async {
        let s = status(&url).await;
        (s["reloads"]["succeeded"].as_u64() > reloads_before["succeeded"].as_u64()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reloads = status(&url).await["reloads"].clone();
    assert_eq!(
        reloads["succeeded"],
        reloads_before["succeeded"].as_u64().unwrap() + 1,
        "{reloads}"
    );
    assert_eq!(reloads["failed"], reloads_before["failed"], "{reloads}");
}
