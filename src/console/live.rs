//! `/live`: server-sent events telling open pages that what they show may
//! have changed (a commit, or figures rebuilt behind the page). The page's
//! script then fetches itself again; the event says nothing more, so
//! nothing reaches a page that its own fetch would not show.

use super::Console;
use crate::store::Store;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Changes closer together than this are told as one.
const COALESCE: Duration = Duration::from_millis(250);

struct Watching {
    commits: watch::Receiver<u64>,
    rebuilt: watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
    _open: OpenPage,
}

/// Counts an open live page for as long as its stream exists (a closed tab
/// drops the stream without it ever ending).
struct OpenPage;

impl OpenPage {
    fn new() -> Self {
        crate::telemetry::console_live_pages(1.0);
        OpenPage
    }
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        crate::telemetry::console_live_pages(-1.0);
    }
}

pub(super) async fn stream<S: Store>(
    State(console): State<Arc<Console<S>>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut watching = Watching {
        commits: console.app.store.wakeups().commits.subscribe(),
        rebuilt: console.figures.rebuilt.subscribe(),
        shutdown: console.shutdown.clone(),
        _open: OpenPage::new(),
    };
    watching.commits.mark_unchanged();
    watching.rebuilt.mark_unchanged();
    let events = futures_util::stream::unfold(watching, |mut w| async move {
        let changed = tokio::select! {
            r = w.commits.changed() => r.is_ok(),
            r = w.rebuilt.changed() => r.is_ok(),
            () = w.shutdown.cancelled() => false,
        };
        if !changed {
            return None;
        }
        tokio::time::sleep(COALESCE).await;
        w.commits.mark_unchanged();
        w.rebuilt.mark_unchanged();
        // An event without data is never dispatched by browsers.
        Some((Ok(Event::default().event("changed").data("1")), w))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
