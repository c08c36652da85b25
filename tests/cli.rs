//! The real binary: validate, init and schema from a user's shell.

use std::path::Path;
use std::process::{Command, Output};

fn dealflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(args)
        .env_remove("SMTP_URL")
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
fn validate_json_format_is_one_object_per_line() {
    let out = dealflow(&["validate", "--format", "json", &fixture("bad-cron")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["severity"], "error");
    assert_eq!(first["position"]["line"], 6);
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
