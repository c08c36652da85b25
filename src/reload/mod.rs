//! Hot reload (SPEC §6 "Safe reload"): a change in the workflow folder, a
//! SIGHUP or `POST /v1/reload` sends the same request to one loop, which
//! compiles the whole folder with the code `validate` uses and, only if it
//! is valid and strands no enrollment, has the engine worker swap the whole
//! set between two rounds, so no event is ever evaluated against a mix.
//! A failed reload changes nothing and stays visible in `/v1/status` until
//! a good one.
//!
//! Owns: noticing changes and the reload's status. Never: decides what a new
//! set changes (the engine's [`crate::engine::reload_plan`]) or swaps the
//! set itself (the worker does, between rounds).

mod watch;

pub use watch::{DEBOUNCE, files_fingerprint, watch};

use crate::config::diagnostic::Severity;
use crate::config::{self, Workflows};
use crate::worker::{Command, WorkerHandle};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A failed reload, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadError {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// One sentence.
    pub message: String,
    /// Every error as `file:line:col: message`.
    pub diagnostics: Vec<String>,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new set runs.
    Reloaded {
        /// Its version.
        version: String,
        /// Enrollments moved to other steps or exited.
        moved: usize,
    },
    /// The folder compiles to the running set.
    Unchanged {
        /// The running version.
        version: String,
    },
    /// Nothing changed; this is why.
    Failed(ReloadError),
}

/// What `/v1/status` reports about reloads.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadState {
    /// When the running set was loaded.
    pub loaded_at: DateTime<Utc>,
    /// The last failure, until a good reload.
    pub last_error: Option<ReloadError>,
    /// Reloads that swapped in a new set.
    pub succeeded: u64,
    /// Reloads refused or failed.
    pub failed: u64,
}

/// Shared reload state.
#[derive(Debug)]
pub struct ReloadStatus(Mutex<ReloadState>);

impl ReloadStatus {
    /// The state at start.
    pub fn new(loaded_at: DateTime<Utc>) -> Self {
        ReloadStatus(Mutex::new(ReloadState {
            loaded_at,
            last_error: None,
            succeeded: 0,
            failed: 0,
        }))
    }

    /// A copy of the state.
    pub fn get(&self) -> ReloadState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, outcome: &Outcome, now: DateTime<Utc>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Reloaded { .. } => {
                s.loaded_at = now;
                s.last_error = None;
                s.succeeded += 1;
            }
            Outcome::Unchanged { .. } => s.last_error = None,
            Outcome::Failed(e) => {
                s.last_error = Some(e.clone());
                s.failed += 1;
            }
        }
    }
}

/// Sends reload requests to the loop.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::UnboundedSender<Option<oneshot::Sender<Outcome>>>,
}

impl Reloader {
    /// Asks for a reload without waiting (the watcher, SIGHUP).
    pub fn request(&self) {
        let _ = self.requests.send(None);
    }

    /// Asks for a reload and waits for its outcome (`POST /v1/reload`).
    pub async fn reload(&self) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Some(tx)).ok()?;
        rx.await.ok()
    }
}

/// What the loop works with.
pub struct ReloadContext {
    /// The workflow folder.
    pub dir: PathBuf,
    /// The running set.
    pub workflows: Arc<arc_swap::ArcSwap<Workflows>>,
    /// The engine worker, which swaps.
    pub worker: WorkerHandle,
    /// Shared state for `/v1/status`.
    pub status: Arc<ReloadStatus>,
    /// The clock.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// `public_url` of workflows that do not set it: the listen address.
    pub public_url: String,
}

/// Starts the reload loop; it stops when `cancel` fires, after the reload
/// in hand.
pub fn spawn(
    context: ReloadContext,
    cancel: tokio_util::sync::CancellationToken,
) -> (Reloader, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<oneshot::Sender<Outcome>>>();
    let task = tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                request = rx.recv() => match request {
                    Some(first) => first,
                    None => break,
                },
            };
            // Requests queued meanwhile are answered by this one reload: a
            // burst of saves is one compile.
            let mut waiting = vec![first];
            while let Ok(more) = rx.try_recv() {
                waiting.push(more);
            }
            let outcome = reload_once(&context).await;
            context.status.record(&outcome, context.clock.now());
            match &outcome {
                Outcome::Reloaded { .. } => crate::telemetry::reload(true),
                Outcome::Failed(_) => crate::telemetry::reload(false),
                Outcome::Unchanged { .. } => {}
            }
            for reply in waiting.into_iter().flatten() {
                let _ = reply.send(outcome.clone());
            }
        }
    });
    (Reloader { requests: tx }, task)
}

async fn reload_once(context: &ReloadContext) -> Outcome {
    let dir = context.dir.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load(&dir, &config::environment::ProcessEnvironment)
    })
    .await;
    let now = context.clock.now();
    let fail = |message: String, diagnostics: Vec<String>| {
        tracing::error!(%message, "Reload failed; the running workflows are unchanged.");
        for d in &diagnostics {
            tracing::error!("{d}");
        }
        Outcome::Failed(ReloadError {
            at: now,
            message,
            diagnostics,
        })
    };
    let (new, diagnostics) = match loaded {
        Ok(result) => result,
        Err(e) => return fail(format!("the reload task failed: {e}"), Vec::new()),
    };
    let Some(mut new) = new else {
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| {
                // Folder-level problems name no file: name the folder.
                let mut d = d.clone();
                if d.position.file.as_os_str().is_empty() {
                    d.position.file = context.dir.clone();
                }
                d.to_string()
            })
            .collect();
        return fail(
            format!("{} has {} error(s)", context.dir.display(), errors.len()),
            errors,
        );
    };
    new.settings.default_public_url(&context.public_url);
    let running = context.workflows.load();
    if new.version == running.version {
        return Outcome::Unchanged {
            version: new.version,
        };
    }
    let version = new.version.clone();
    let (reply, answer) = oneshot::channel();
    let swap = Command::Swap {
        workflows: Arc::new(new),
        reply,
    };
    if context.worker.send(swap).await.is_err() {
        return fail("the engine worker has stopped".to_owned(), Vec::new());
    }
    match answer.await {
        Ok(Ok(moved)) => {
            tracing::info!(%version, moved, "Reloaded the workflows.");
            Outcome::Reloaded { version, moved }
        }
        Ok(Err(message)) => fail(message, Vec::new()),
        Err(_) => fail("the engine worker has stopped".to_owned(), Vec::new()),
    }
}
