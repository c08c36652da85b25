//! The daemon's background thread: the engine worker, delivery, mailbox
//! watchers and forecast snapshots run on a runtime of their own, on one
//! thread at a lower CPU priority than the requests.
//!
//! An event's `202` waits only for its append and flush; what the event
//! causes may come a moment later. On the requests' runtime, engine rounds
//! and delivery steps took turns with requests on the same two threads, so
//! each round delayed the answers queued behind it, and work moved between
//! threads with a wake-up each time. On their own thread they no longer do:
//! requests take the cores when they need them, and the background fills
//! the time they leave (the requests wait on a disk sync most of the time),
//! catching up in larger rounds, which cost less per event. Measured in
//! W1 (issue 25, 2 cores): 12,100 events/s with everything on one
//! runtime, 16,000 apart at the same priority; alternated, four runs each,
//! medians 20,400 at nice 10 and 22,200 at nice 15 (with delivery as far
//! behind at the end); CPU per event 0.090 → 0.068 ms. One thread, not a
//! pool: a background runtime of two threads answered 15,900 to 17,500
//! (three runs), its threads handing work to each other again.
//!
//! The catch: under a load that keeps every core busy, the background
//! falls behind, and catches up when the load eases. Every event is
//! durable from its `202`, so nothing is lost, only handled later
//! (`/v1/status` shows the events waiting).

use std::io;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How much nicer than the daemon the background thread is (Linux: nice
/// values run from -20 to 19; a thread 15 steps nicer than another gets
/// about a thirtieth of the CPU it gets while both want it). Threads
/// created from it (its blocking pool) inherit it. Not the nicest (19):
/// against other programs that keep the host's cores busy, the background
/// still gets a share, not only what they leave.
pub const NICER_BY: i32 = 15;

/// The thread's name, and its blocking pool's (`top -H` shows the first
/// 15 bytes: `dealflow-backgr`).
const THREAD_NAME: &str = "dealflow-background";

/// The lowest priority Linux has.
const NICEST: i32 = 19;

/// The background runtime; dropping it stops its thread, and with it every
/// task still running there.
pub struct Background {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts the thread and its runtime.
    pub fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(THREAD_NAME)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                lower_priority();
                // The runtime runs its tasks only while a thread drives it.
                // Dropping the sender ends it.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Background {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn background tasks (`handle().enter()` makes
    /// `tokio::spawn` spawn there).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("The background thread panicked.");
        }
    }
}

/// Lowers the calling thread's CPU priority by [`NICER_BY`]. A thread may
/// always lower its own priority; if it still fails, the daemon runs at
/// one priority, as it did before.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let thread = Some(rustix::thread::gettid());
        let lowered = getpriority_process(thread)
            .and_then(|nice| setpriority_process(thread, (nice + NICER_BY).min(NICEST)));
        if let Err(e) = lowered {
            tracing::warn!(error = %e, "Could not lower the background thread's priority; it runs at the requests' priority.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn background_tasks_run_on_a_thread_of_lower_priority() {
        let nice = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        // The thread that starts it has the daemon's priority.
        let daemons = nice();
        let background = Background::start().unwrap();
        let task = background.handle().spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            (name, nice())
        });
        let (name, nice) = background.handle().block_on(async {
            // Joined from outside the runtime: a plain thread drives it.
            task.await.unwrap()
        });
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_eq!(nice, (daemons + NICER_BY).min(NICEST));
        drop(background);
    }

    #[test]
    fn dropping_it_ends_the_tasks_still_running() {
        let background = Background::start().unwrap();
        let (held, released) = tokio::sync::oneshot::channel::<()>();
        background.handle().spawn(async move {
            std::future::pending::<()>().await;
            drop(held);
        });
        drop(background);
        // The task (and what it held) is gone with the runtime.
        assert!(released.blocking_recv().is_err());
    }
}
