//! The real binary: validate, init and schema from a user's shell.

use std::path::Path;
use std::process::{Command, Output};

fn dealflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(args)
        .env_remove("SMTP_URL")
        // The signing secrets examples/sources names, as an admin sets them.
        .envs(
            [
                "CALENDLY_SIGNING_KEY",
                "TYPEFORM_SECRET",
                "CALCOM_SECRET",
                "HUBSPOT_HOOK_TOKEN",
                "STRIPE_WEBHOOK_SECRET",
            ]
            .map(|name| (name, "test-secret")),
        )
        .output()
        .expect("run dealflow")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/broken")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn validate_reports_every_problem_with_its_place_and_exits_1() {
    let dir = fixture("many-problems-in-one-pass");
    let out = dealflow(&["validate", &dir]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{dir}/a.yaml:8:33: unknown name \"leed\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{dir}/b.yaml:2:18: unknown time zone")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{dir}/c.yaml:1:8: expected a list here")),
        "{stdout}"
    );
    assert!(stdout.contains("5 error(s)"), "{stdout}");
}

#[test]
fn validate_json_format_is_one_object_per_line_with_its_code() {
    let out = dealflow(&["validate", "--format", "json", &fixture("bad-cron")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["severity"], "error");
    assert_eq!(first["position"]["line"], 6);
    assert_eq!(first["code"], "value");
}

#[test]
fn validate_accepts_the_default_workflows() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let out = dealflow(&["validate", dir.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[test]
fn init_writes_a_folder_that_validates_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flows");
    let dir = dir.to_str().unwrap();
    assert_eq!(dealflow(&["init", dir]).status.code(), Some(0));
    let out = dealflow(&["validate", dir]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let again = dealflow(&["init", dir]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}

#[test]
fn schema_describes_every_section() {
    let out = dealflow(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sections = schema["properties"].as_object().unwrap();
    for s in [
        "settings",
        "calendars",
        "team",
        "pipelines",
        "rules",
        "sequences",
        "scoring",
        "tests",
    ] {
        assert!(sections.contains_key(s), "schema lacks {s}");
    }
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn a_missing_folder_is_reported_not_crashed_on() {
    let out = dealflow(&["validate", "/nonexistent/flows"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("workflow folder not found"));
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn test_passes_on_the_default_workflows_and_every_example() {
    for dir in [
        "workflows",
        "examples/starter",
        "examples/insurance-agency",
        "examples/service-business",
        "examples/sources",
    ] {
        let out = dealflow(&["test", &repo(dir)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{dir}: {stdout}");
        assert!(stdout.contains(" passed, 0 failed"), "{dir}: {stdout}");
    }
}

#[test]
fn test_fails_with_a_diff_when_the_timeline_differs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flows.yaml"),
        r#"
rules:
  - name: greet
    for: lead
    on: signed.up
    do: [ { task: { title: "Say hi" } } ]
tests:
  - name: expects a task that is not made
    start: "2026-03-02T09:00:00Z"
    events:
      - { type: signed.up, record: { kind: lead, id: L1 } }
    expect:
      - { task: { title: "Say bye" } }
"#,
    )
    .unwrap();
    let out = dealflow(&["test", &dir.path().to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  expects a task that is not made"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected, but nothing matched: { task: {\"title\":\"Say bye\"} }"),
        "{stdout}"
    );
    assert!(
        stdout.contains("task               lead/L1 \"Say hi\" unassigned"),
        "{stdout}"
    );
}

#[test]
fn simulate_prints_one_sorted_utc_column_and_the_recipients_local_time() {
    let out = dealflow(&[
        "simulate",
        "--workflows",
        &repo("workflows"),
        "--events",
        &repo("workflows/events.jsonl"),
        "--start",
        "2026-03-02T08:00:00-05:00",
        "--until",
        "10d",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The lead's zone is America/Chicago: the intro goes at the window's start there.
    let intro = stdout
        .lines()
        .find(|l| l.contains("email") && l.contains(" intro → pat@prospect.example"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(intro.starts_with("2026-03-02 15:0"), "{intro}");
    assert!(intro.contains(" UTC "), "{intro}");
    assert!(intro.contains("(Mon 09:0"), "{intro}");
    assert!(intro.contains(" CST for the recipient)"), "{intro}");
    // One time column, in order.
    let times: Vec<&str> = stdout.lines().map(|l| &l[..16]).collect();
    assert!(times.is_sorted(), "{stdout}");
    assert!(
        stdout.contains("sequence.exited    lead/L-1 reason=email.replied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stage.stalled      deal/D-1 count=1"),
        "{stdout}"
    );
}

#[test]
fn simulate_reports_a_bad_events_line_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"form.submitted\",\"record\":{\"kind\":\"lead\",\"id\":\"L1\"}}\n{\"at\":\"4d\",\"type\":\"x\",\"record\":{\"kind\":\"lead\",\"id\":\"L1\"}}\n",
    )
    .unwrap();
    let out = dealflow(&[
        "simulate",
        "--workflows",
        &repo("workflows"),
        "--events",
        &events.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("events.jsonl:2: invalid offset \"4d\""),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_empty_folder_and_a_folder_without_tests_are_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dealflow(&["validate", &dir.path().to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("the folder holds no workflow files (*.yaml)"),
        "{stdout}"
    );
    std::fs::write(
        dir.path().join("flows.yaml"),
        "rules:\n  - { name: r, on: x, do: [ { emit: { type: y } } ] }\n",
    )
    .unwrap();
    let out = dealflow(&["test", &dir.path().to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("No tests in "), "{stdout}");
}

#[test]
fn simulate_takes_a_plain_start_date_and_survives_a_closed_pipe() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args([
            "simulate",
            "--workflows",
            &repo("workflows"),
            "--events",
            &repo("workflows/events.jsonl"),
            "--start",
            "2026-03-02",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then hang up, as `| head -1` does.
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(&first[..10], b"2026-03-02");
}
