//! Starting the real daemon on an OS-chosen loopback port, for end-to-end tests.
#![allow(dead_code)]

pub mod browser;
pub mod imap;
pub mod sinks;
pub mod twilio;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `dealflow run`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub url: String,
}

impl Daemon {
    /// Starts the daemon on `workflows` with its store in `data`.
    pub fn start(workflows: &Path, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dealflow"));
        command
            .args(["run", "--listen", "127.0.0.1:0", "--workflows"])
            .arg(workflows)
            .arg("--data")
            .arg(data)
            .args(extra)
            .env_remove("DEALFLOW_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        Daemon::spawn(command)
    }

    /// Spawns a `dealflow run` command line (stdout piped) and waits for
    /// the line that says where it listens.
    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dealflow");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("dealflow listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Daemon { child, url }
    }

    /// Kills the process at once, as `kill -9` would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workflow folder with one file, in a temp dir.
pub fn workflow_dir(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("flows.yaml"), yaml).unwrap();
    (dir, flows)
}

/// GETs a JSON answer.
pub async fn get_json(url: &str) -> serde_json::Value {
    let r = reqwest::get(url).await.expect("GET");
    r.json().await.unwrap_or(serde_json::Value::Null)
}

/// POSTs a JSON body; answers the status and the JSON answer.
pub async fn post_json(
    url: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls `probe` every 50 ms until it answers `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..seconds * 20 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Titles of the daemon's tasks with `status` (open, completed, all).
pub async fn task_titles(url: &str, status: &str) -> Vec<String> {
    let tasks = get_json(&format!("{url}/v1/tasks?status={status}&limit=500")).await;
    tasks["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["title"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
