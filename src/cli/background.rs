//! The daemon's background thread: the engine worker, delivery, mailbox
//! watchers and forecast snapshots run on a runtime of their own, on one
//! thread beside the requests' (`cli::run`).
//!
//! An event's `202` waits only for its append and flush; what the event
//! causes may come a moment later. On the requests' runtime, engine rounds
//! and delivery steps took turns with requests on the same threads, so
//! each round delayed the answers queued behind it, and work moved between
//! threads with a wake-up each time. On a thread of their own they no
//! longer do, and catch up in larger rounds, which cost less per event.
//! Measured in W1 (issue 25, 2 cores): 12,100 events/s with everything on
//! one runtime, 16,000 apart. One thread, not a pool: a background runtime
//! of two threads answered 15,900 to 17,500 (three runs), its threads
//! handing work to each other again.
//!
//! It runs at the requests' priority. While the requests had a thread per
//! core it ran 15 steps nicer, so that requests took the cores first (W1
//! answered 9% more events than at 10 steps) and the engine and delivery
//! caught up afterwards. Since the requests run on one thread, the two
//! threads share the cores, and what is answered is handled at the same
//! pace: under a sustained load the backlog no longer grows. W1
//! alternated, twelve runs each, medians: the sink had every call 5.05 s
//! after the start against 5.36 s (19,800 against 18,600 events/s end to
//! end), 19,300 against 21,500 events/s answered, CPU per event 0.053
//! against 0.056 ms.

use std::io;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The thread's name, and its blocking pool's (`top -H` shows the first
/// 15 bytes: `dealflow-backgr`).
const THREAD_NAME: &str = "dealflow-background";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_tasks_run_on_its_thread() {
        let background = Background::start().unwrap();
        let task = background
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) });
        let name = background.handle().block_on(async {
            // Joined from outside the runtime: a plain thread drives it.
            task.await.unwrap()
        });
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
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
