//! Real components the tests need, from Debian's packages: found where
//! Debian installs them, or installed with apt-get first (as `.ci/run`
//! does), so `cargo test` needs no set-up by hand on Debian.

use std::path::Path;
use std::process::{Command, Stdio};

/// The first of `paths` that exists, after installing `packages` with
/// apt-get when none does.
pub fn program(paths: &[&'static str], packages: &[&str]) -> &'static str {
    let installed = || paths.iter().copied().find(|p| Path::new(p).exists());
    if let Some(path) = installed() {
        return path;
    }
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut apt = Command::new(if root { "apt-get" } else { "sudo" });
    if !root {
        apt.arg("apt-get");
    }
    let _ = apt
        .args(["install", "-y", "-qq"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    installed().unwrap_or_else(|| {
        panic!(
            "{} is not installed and apt-get could not install it: install Debian's {}",
            paths[0],
            packages.join(" ")
        )
    })
}
