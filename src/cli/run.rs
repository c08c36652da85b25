//! `dealflow run`: the daemon.

use super::background::Background;
use crate::api::{self, App};
use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::delivery::{self, unsubscribe::UnsubscribeKey};
use crate::reload::{self, ReloadStatus};
use crate::store::{FjallBackend, KvStore};
use crate::worker;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where and how to run.
pub struct RunOptions<'a> {
    /// Workflow folder.
    pub workflows: &'a Path,
    /// Data folder (the store lives in `DATA/store`).
    pub data: &'a Path,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// The store's page cache in MiB.
    pub store_cache_mib: u64,
    /// Longest wait for a request's headers, and for its body.
    pub read_timeout: std::time::Duration,
}

/// Loads the workflows, opens the store, serves until SIGTERM or Ctrl-C.
pub fn run(options: RunOptions) -> anyhow::Result<ExitCode> {
    let token = std::env::var("DEALFLOW_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() && !options.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without a token: set DEALFLOW_TOKEN, or listen on 127.0.0.1",
            options.listen
        );
    }
    small_pages_only();
    // Taken before loading: a save made before the watch starts differs.
    let loaded = reload::files_fingerprint(options.workflows);
    let workflows = super::load_workflows(options.workflows)?;
    let store_dir = options.data.join("store");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("creating {}", store_dir.display()))?;
    // A damaged store can make the engine panic while opening; that is caught and
    // reported with the folder and what to do, so its raw message (which
    // the report repeats) is not printed first. Nothing else runs yet.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let backend =
        crate::store::open_disk(&store_dir, options.store_cache_mib.saturating_mul(1 << 20));
    std::panic::set_hook(default_hook);
    let backend = backend?;
    let store = Arc::new(KvStore::open(backend, &store_dir.display().to_string())?);
    let runtime = requests_runtime().context("starting the async runtime")?;
    let background = Background::start().context("starting the background thread")?;
    let reopen = runtime.block_on(serve(
        store,
        (workflows, loaded),
        token,
        background.handle(),
        options,
    ))?;
    // Every task and the store are dropped with the runtimes: the store's
    // locks are free for the process that takes over.
    drop(runtime);
    drop(background);
    match reopen {
        Some(address) => Err(start_again(address)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Replaces this process with a new `dealflow run` of the same arguments
/// on the same address: fjall refuses every write after one failed until
/// it is opened again, and a fresh process opens it from what is durable.
/// Answers only if that failed.
fn start_again(address: SocketAddr) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let listen = args.iter().position(|a| a == "--listen");
    match listen {
        Some(i) if i + 1 < args.len() => args[i + 1] = address.to_string().into(),
        _ => {
            args.retain(|a| !a.to_string_lossy().starts_with("--listen="));
            args.extend(["--listen".into(), address.to_string().into()]);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::Error::new(e).context("finding this program to start it again"),
    };
    let e = std::process::Command::new(exe).args(args).exec();
    anyhow::Error::new(e).context("starting dealflow again to reopen its store")
}

/// How often a store that cannot write looks for room again.
const WRITE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// Room a store needs before it is opened again: fjall writes a memtable
/// of up to 32 MiB at once and compacts beside it, so a few bytes free is
/// not enough.
const ROOM_NEEDED: usize = 64 << 20;

/// Waits until the store has failed a write (a full disk) and the data
/// folder can take [`ROOM_NEEDED`] bytes again, then says so.
async fn room_again(store: Arc<KvStore<FjallBackend>>, data: std::path::PathBuf) {
    let mut logged = false;
    loop {
        tokio::time::sleep(WRITE_RETRY).await;
        let Some(failure) = crate::store::Store::write_failure(store.as_ref()) else {
            continue;
        };
        if !logged {
            tracing::error!(%failure, data = %data.display(), "The store cannot write any more; requests are answered 503 until the data folder has room again.");
            logged = true;
        }
        let probe = data.join(".dealflow-room-probe");
        let fits = tokio::task::spawn_blocking(move || {
            let written = std::fs::File::create(&probe).and_then(|mut f| {
                use std::io::Write;
                f.write_all(&vec![0u8; ROOM_NEEDED])?;
                f.sync_all()
            });
            let _ = std::fs::remove_file(&probe);
            written.is_ok()
        })
        .await
        .unwrap_or(false);
        if fits {
            tracing::warn!("The data folder has room again; starting again to reopen the store.");
            return;
        }
    }
}

/// The requests' pool threads (syncs and whole-table reads); `top -H`
/// shows the first 15 bytes, `dealflow-reques`.
const REQUESTS_POOL: &str = "dealflow-requests";

/// The requests' runtime: the thread that calls `run`, with a pool for
/// syncs and for work that reads whole tables (`api::extract::blocking`).
/// A request's own work is short (parse, validate, append to the log's
/// write batch; then it waits for a sync), so one thread keeps up with
/// what one background thread can handle, and hands nothing between
/// threads: with a thread per core, each request woke another thread to
/// append its events and again to answer it. W1 on 2 cores, five runs
/// each, alternated (issue 25), medians: CPU per event 0.063 → 0.055 ms,
/// events answered 19,500 → 20,800/s, the sink had every call 5.95 → 5.38 s
/// after the start.
fn requests_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(REQUESTS_POOL)
        .build()
}

/// Keeps the daemon's memory in ordinary 4 KiB pages. The allocator asks
/// for transparent huge pages, and the kernel clears each 2 MiB page in
/// full the first time any byte of it is touched: under W1 that clearing
/// was 6% of the background thread, and the daemon held 25 MiB more for
/// the same work (170 against 145 MiB) and answered slower at the tail
/// (p99 7.2 against 5.8 ms).
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "Transparent huge pages stay on.");
    }
}

/// Serves until a stop signal (`None`), or until a store that failed a
/// write can be opened again (the address, to start again on it).
async fn serve(
    store: Arc<KvStore<FjallBackend>>,
    (mut workflows, loaded): (config::Workflows, u64),
    token: Option<String>,
    background: &tokio::runtime::Handle,
    options: RunOptions<'_>,
) -> anyhow::Result<Option<SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    // Unsubscribe links must reach this daemon when public_url is not set.
    let public_url = format!("http://{address}");
    workflows.settings.default_public_url(&public_url);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let version = workflows.version.clone();
    let rules = workflows.rules.len();
    let workflows = Arc::new(arc_swap::ArcSwap::from_pointee(workflows));
    let cancel = CancellationToken::new();
    let unsubscribe = UnsubscribeKey::load_or_create(options.data)?;
    let delivery_health = Arc::new(delivery::health::DeliveryHealth::default());
    let mailbox_health = Arc::new(crate::mailbox::health::MailboxHealth::default());
    let engine_health = Arc::new(worker::health::EngineHealth::default());
    // Everything but the requests runs on the background thread (see
    // `background`); the guard is dropped before the next await.
    let on_background = background.enter();
    let delivery_task = delivery::spawn(
        delivery::Outbox {
            store: store.clone(),
            workflows: workflows.clone(),
            clock: clock.clone(),
            key: unsubscribe.clone(),
            data_dir: options.data.to_path_buf(),
            health: delivery_health.clone(),
        },
        cancel.clone(),
    );
    let mailbox_task = crate::mailbox::spawn(
        crate::mailbox::Watchers {
            store: store.clone(),
            workflows: workflows.clone(),
            clock: clock.clone(),
            key: unsubscribe.clone(),
            health: mailbox_health.clone(),
        },
        cancel.clone(),
    );
    let forecast_task = tokio::spawn(crate::report::forecast::keep_daily_snapshots(
        store.clone(),
        workflows.clone(),
        clock.clone(),
        cancel.clone(),
    ));
    let (handle, worker_task) = worker::spawn(
        store.clone(),
        workflows.clone(),
        clock.clone(),
        engine_health.clone(),
        cancel.clone(),
    );
    drop(on_background);
    let metrics = crate::telemetry::install();
    let status = Arc::new(ReloadStatus::new(clock.now()));
    let (reloader, reload_task) = reload::spawn(
        reload::ReloadContext {
            dir: options.workflows.to_path_buf(),
            workflows: workflows.clone(),
            worker: handle.clone(),
            status: status.clone(),
            clock: clock.clone(),
            public_url,
        },
        cancel.clone(),
    );
    let watcher = reload::watch(
        options.workflows.to_path_buf(),
        loaded,
        reloader.clone(),
        cancel.clone(),
    );
    let sighup_task = reload_on_sighup(reloader.clone(), cancel.clone());
    let app = Arc::new(App {
        store: store.clone(),
        appender: crate::api::Appender::start(store.clone()),
        workflows,
        worker: handle,
        reload: status,
        reloader,
        metrics,
        clock,
        token,
        workflows_dir: options.workflows.display().to_string(),
        max_body: options.max_body,
        read_timeout: options.read_timeout,
        unsubscribe,
        unnamed_kinds: Default::default(),
        delivery_health,
        mailbox_health,
        engine_health,
    });
    tracing::info!(%address, %version, rules, "Dealflow is running.");
    // Tests and scripts read this line to learn the port chosen by the OS.
    // Nobody may read it any more (a daemon started again after a full
    // disk writes it again): a closed stdout is not a reason to stop.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "dealflow listening on http://{address}").and_then(|()| out.flush());
    }
    let shutdown = cancel.clone();
    let console = crate::console::Console::new(app.clone(), cancel.clone());
    let reopen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reopening = reopen.clone();
    let room = room_again(store.clone(), options.data.to_path_buf());
    api::serve(
        listener,
        api::router(app).merge(crate::console::router(console)),
        options.read_timeout,
        async move {
            tokio::select! {
                _ = wait_for_stop_signal() => {
                    tracing::info!("Stopping: finishing requests and the current commit.");
                }
                _ = room => reopening.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            shutdown.cancel();
        },
    )
    .await;
    cancel.cancel();
    join_all(vec![
        ("engine worker", worker_task),
        ("delivery", delivery_task),
        ("mailboxes", mailbox_task),
        ("forecast snapshots", forecast_task),
        ("folder watcher", watcher),
        ("reload loop", reload_task),
        ("SIGHUP listener", sighup_task),
    ])
    .await;
    if reopen.load(std::sync::atomic::Ordering::SeqCst) {
        // Nothing more can be flushed: what is durable is what the new
        // process will read.
        return Ok(Some(address));
    }
    crate::store::Store::flush(store.as_ref()).await?;
    tracing::info!("Dealflow stopped.");
    Ok(None)
}

/// Longest wait for the daemon's tasks to finish what they hold on stop.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for every task of the daemon to finish, in one tracker, naming
/// any that does not within [`STOP_WAIT`] (the store is flushed anyway).
async fn join_all(tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>) {
    let tracker = tokio_util::task::TaskTracker::new();
    for (name, task) in tasks {
        tracker.spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "A task of the daemon failed.");
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(STOP_WAIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(waited = ?STOP_WAIT, "Some tasks did not stop in time; stopping anyway.");
    }
}

/// SIGHUP asks for the same reload as a saved file or `POST /v1/reload`.
fn reload_on_sighup(
    reloader: reload::Reloader,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    signal = hangup.recv() => {
                        if signal.is_none() {
                            return;
                        }
                        tracing::info!("SIGHUP: reloading the workflows.");
                        reloader.request();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reloader;
            cancel.cancelled().await;
        }
    })
}

async fn wait_for_stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
