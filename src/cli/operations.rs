//! `dealflow backup`, `restore` and `check` (SPEC §9).

use super::client::Daemon;
use crate::delivery::unsubscribe::UnsubscribeKey;
use crate::store::backup::{self, BackupHeader};
use crate::store::{DEFAULT_CACHE_MIB, Store, open_disk};
use anyhow::{Context, bail};
use base64::Engine;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// `dealflow backup --out FILE`: streams the running daemon's backup into
/// FILE (through `FILE.partial`, renamed once the whole file checks out).
pub fn backup(daemon: &Daemon, out: &Path) -> anyhow::Result<ExitCode> {
    let partial = out.with_extension("partial");
    let runtime = tokio::runtime::Runtime::new()?;
    let bytes = runtime.block_on(download(daemon, &partial))?;
    let (header, records) = backup::verify_backup(&partial).with_context(|| {
        format!(
            "the backup received in {} does not check out",
            partial.display()
        )
    })?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    println!(
        "backup of {} written to {}: {records} records, {:.1} MiB, checksum verified (store format {})",
        header.created_at.format("%Y-%m-%d %H:%M:%SZ"),
        out.display(),
        bytes as f64 / (1 << 20) as f64,
        header.store_format
    );
    Ok(ExitCode::SUCCESS)
}

async fn download(daemon: &Daemon, to: &Path) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let mut response = daemon
        .request(&client, reqwest::Method::GET, "/v1/backup")
        .timeout(std::time::Duration::from_secs(24 * 3600))
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {}", daemon.url))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("the daemon answered {status}: {body}");
    }
    let mut file =
        std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut written = 0u64;
    let mut shown = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the backup stopped before its end (the daemon's log says why)")?
    {
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
        if written - shown >= 8 << 20 {
            shown = written;
            if terminal {
                eprint!("\r{:.0} MiB received", written as f64 / (1 << 20) as f64);
            } else {
                eprintln!("{:.0} MiB received", written as f64 / (1 << 20) as f64);
            }
        }
    }
    if terminal && shown > 0 {
        eprintln!();
    }
    file.sync_all()?;
    Ok(written)
}

/// `dealflow restore FILE --data DIR`: into an empty (or new) DIR only;
/// the whole file is checked before anything is written.
pub fn restore(file: &Path, data: &Path) -> anyhow::Result<ExitCode> {
    let occupied = std::fs::read_dir(data)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        bail!(
            "{} is not empty; restore into a new or empty folder (nothing was written)",
            data.display()
        );
    }
    let (header, records) = backup::verify_backup(file)
        .with_context(|| format!("{} cannot be restored", file.display()))?;
    let store_dir = data.join("store");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("creating {}", store_dir.display()))?;
    let events = match restore_into(file, data, &header) {
        Ok(events) => events,
        Err(e) => {
            // The folder was empty or new: leave it so, not half restored.
            let _ = std::fs::remove_dir_all(&store_dir);
            let _ = std::fs::remove_file(data.join("unsubscribe.key"));
            let undone = format!(
                "restoring into {} failed; it was emptied again",
                data.display()
            );
            return Err(e.context(undone));
        }
    };
    println!(
        "restored the backup of {} into {}: {records} records, {events} events; start the daemon with --data {}",
        header.created_at.format("%Y-%m-%d %H:%M:%SZ"),
        data.display(),
        data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the verified backup into the new store and its key beside it;
/// answers the number of events the restored log holds.
fn restore_into(file: &Path, data: &Path, header: &BackupHeader) -> anyhow::Result<u64> {
    let store_dir = data.join("store");
    let backend = open_disk(&store_dir, DEFAULT_CACHE_MIB << 20)?;
    backup::restore_backup(file, &backend)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(crate::store::Backend::flush(&backend))?;
    drop(backend);
    save_key(header, data)?;
    // Opened as the daemon will open it: the format mark is checked.
    let store = crate::store::KvStore::open(
        open_disk(&store_dir, DEFAULT_CACHE_MIB << 20)?,
        &store_dir.display().to_string(),
    )?;
    let events = crate::store::EventTable::last_seq(&store)?;
    runtime.block_on(store.flush())?;
    Ok(events)
}

fn save_key(header: &BackupHeader, data: &Path) -> anyhow::Result<()> {
    let Some(encoded) = &header.unsubscribe_key else {
        return Ok(());
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("the backup's unsubscribe key does not decode")?;
    UnsubscribeKey::from_bytes(&key).save(data)?;
    Ok(())
}

/// `dealflow check --data DIR [--repair]`: reads every table of a stopped
/// store; exit 1 naming what is wrong (what `--repair` could not mend).
pub fn check(data: &Path, repair: bool) -> anyhow::Result<ExitCode> {
    let store_dir = data.join("store");
    if !store_dir.is_dir() {
        bail!(
            "{} holds no dealflow store (no store/ folder)",
            data.display()
        );
    }
    let backend = open_disk(&store_dir, DEFAULT_CACHE_MIB << 20)?;
    let store = crate::store::KvStore::open(backend, &store_dir.display().to_string())?;
    let report = store.check(repair)?;
    let entries: u64 = report.counts.values().sum();
    for problem in &report.problems {
        println!("{problem}");
    }
    let remaining = if repair && report.repaired > 0 {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(store.flush())?;
        println!("repaired {} index entries", report.repaired);
        store.check(false)?.problems.len()
    } else {
        report.problems.len()
    };
    let tables: Vec<String> = report
        .counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    println!("{entries} entries read ({})", tables.join(", "));
    // The engine keeps its journal, compressed tables and versions not yet
    // compacted away: the ratio says how the disk compares with the data.
    let on_disk = crate::store::Store::size_on_disk(&store);
    println!(
        "{:.1} MiB of keys and values in {:.1} MiB on disk ({:.1}x)",
        report.bytes as f64 / 1048576.0,
        on_disk as f64 / 1048576.0,
        on_disk as f64 / (report.bytes.max(1)) as f64
    );
    if remaining == 0 {
        println!("the store at {} is sound", store_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let hint = if repair {
        "rows that do not decode need a person: restore a backup (docs/operations.md)"
    } else {
        "run with --repair to rebuild indexes; rows that do not decode need a person"
    };
    println!("{remaining} problem(s) remain; {hint}");
    Ok(ExitCode::from(1))
}
