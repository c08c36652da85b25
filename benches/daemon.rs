//! Starting the release daemon for benchmarks (build it first:
//! `cargo build --release`, or point DEALFLOW_BIN at a binary).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(flows: &std::path::Path, data: &std::path::Path) -> Daemon {
    let binary =
        std::env::var("DEALFLOW_BIN").unwrap_or_else(|_| "target/release/dealflow".to_owned());
    let mut child = Command::new(binary)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--max-body",
            "8388608",
            "--workflows",
        ])
        .arg(flows)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("build the release binary first: cargo build --release");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .trim_start_matches("dealflow listening on ")
        .to_owned();
    Daemon { child, url }
}
