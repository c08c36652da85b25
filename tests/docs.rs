//! The manual's examples work as written: every ```yaml block in README.md
//! and docs/*.md is written to a folder of its own (with the doc's template
//! blocks, fenced as ```md file=templates/NAME.md) and must validate with no
//! error. Every relative link in them must point at a file that exists.

use dealflow::config::{self, diagnostic::Severity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A fenced block: its info string and its text.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: index + 1,
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The text of a page without its fenced blocks.
fn outside_code_blocks(markdown: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn manual() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The environment the examples are validated with (they name these).
fn env() -> HashMap<String, String> {
    let secrets = [
        "CALENDLY_SIGNING_KEY",
        "GITHUB_WEBHOOK_SECRET",
        "BILLING_WEBHOOK_SECRET",
        "FORMS_TOKEN",
        "IMAP_PASSWORD",
    ]
    .map(|name| (name.to_owned(), format!("test-{name}")));
    let mut env = HashMap::from(secrets);
    env.insert("SMTP_URL".to_owned(), "smtp://127.0.0.1:2525".to_owned());
    env
}

#[test]
fn every_yaml_example_in_the_manual_validates() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in manual() {
        let text = std::fs::read_to_string(&page).unwrap();
        let all = blocks(&text);
        let templates: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|b| Some((b.info.strip_prefix("md file=")?, b.text.as_str())))
            .collect();
        for block in all.iter().filter(|b| b.info == "yaml") {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("example.yaml"), &block.text).unwrap();
            let uses_templates = block.text.contains("template:");
            for (path, body) in templates.iter().filter(|_| uses_templates) {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            }
            let (workflows, diagnostics) = config::load(dir.path(), &env());
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect();
            if workflows.is_none() || !errors.is_empty() {
                failures.push(format!("{}:{}: {errors:#?}", page.display(), block.line));
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_relative_link_in_the_manual_points_at_a_file() {
    let mut broken = Vec::new();
    for page in manual() {
        let text = std::fs::read_to_string(&page).unwrap();
        let prose = outside_code_blocks(&text);
        let base = page.parent().unwrap();
        for target in prose
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            if !base.join(file).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to missing files: {broken:#?}");
}

/// Every diagnostic code is explained where `validate` is documented, so a
/// user who meets `[no-effect]` can look it up.
#[test]
fn every_diagnostic_code_is_explained_in_the_cli_guide() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/cli.md")).unwrap_or_default();
    let missing: Vec<&str> = config::diagnostic::Code::ALL
        .iter()
        .map(|code| code.name())
        .filter(|name| !guide.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cli.md does not explain: {missing:?}"
    );
}
