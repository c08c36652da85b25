//! Every folder under `tests/fixtures/broken/` holds one kind of mistake and
//! an `expected.txt` with the exact diagnostics `validate` must print
//! (file:line:col: message). Run with `UPDATE_EXPECTED=1` to rewrite them
//! after an intended change, then review the diff.

use dealflow::config::{self, diagnostic::Severity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The environment the fixtures see; `SECRET_ZONE` must never be printed.
fn fixture_env() -> HashMap<String, String> {
    HashMap::from([("SECRET_ZONE".to_owned(), "hunter2-zone".to_owned())])
}

fn fixture_dirs(group: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(group);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn render(dir: &Path) -> (bool, String) {
    let (workflows, diagnostics) = config::load(dir, &fixture_env());
    let text: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
    (workflows.is_some(), text)
}

#[test]
fn every_broken_folder_gives_exactly_its_expected_diagnostics() {
    let dirs = fixture_dirs("broken");
    assert!(
        dirs.len() >= 30,
        "at least 30 distinct broken folders, found {}",
        dirs.len()
    );
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (compiled, actual) = render(dir);
        let expected_path = dir.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {name}\nexpected:\n{expected}actual:\n{actual}"
            ));
        }
        let only_warnings = name.starts_with("warning-");
        if compiled != only_warnings {
            failures.push(format!(
                "--- {name}: compiled = {compiled}, expected {only_warnings}"
            ));
        }
        if actual.is_empty() {
            failures.push(format!("--- {name}: no diagnostics at all"));
        }
        if actual.contains("hunter2") {
            failures.push(format!("--- {name}: a secret value was printed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_workflow_folders_validate_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut folders = vec![root.join("workflows")];
    folders.extend(
        std::fs::read_dir(root.join("examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir()),
    );
    assert!(
        folders.len() >= 4,
        "workflows/, starter and two more examples"
    );
    // The secrets examples/sources verifies with, as an admin would set them.
    let env: HashMap<String, String> = [
        "CALENDLY_SIGNING_KEY",
        "TYPEFORM_SECRET",
        "CALCOM_SECRET",
        "HUBSPOT_HOOK_TOKEN",
        "STRIPE_WEBHOOK_SECRET",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), format!("test-{name}")))
    .collect();
    for dir in folders {
        let (workflows, diagnostics) = config::load(&dir, &env);
        let shown: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            workflows.is_some(),
            "{} does not compile: {shown:#?}",
            dir.display()
        );
        assert!(
            diagnostics.iter().all(|d| d.severity != Severity::Error) && shown.is_empty(),
            "{} has diagnostics: {shown:#?}",
            dir.display()
        );
    }
}
