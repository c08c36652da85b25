//! Group append: the requests that post events at the same moment share one
//! store batch and one flush.
//!
//! sled 0.34 writes out and syncs its log buffer twice for every batch it
//! applies (`pin_log`), whatever the batch holds, so a batch per request
//! made single-event ingest pay three syncs per event. Here one task
//! appends: it takes every request waiting, appends their events in one
//! batch, flushes once and answers each request with its own part. While it
//! flushes, the next group gathers, so groups grow with the load and a lone
//! request is not delayed. (Appending the next group while one flushes
//! measured no faster in the ingest benchmark, so it is not done.) Nothing
//! is answered before the flush that makes its events durable.

use crate::state::NewEvent;
use crate::store::{Appended, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting beyond this make new ones wait to be queued.
const QUEUE: usize = 1024;

/// Appends events to the log durably, in groups. Cheap to share.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Request>,
}

struct Request {
    events: Vec<NewEvent>,
    answer: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
}

impl Appender {
    /// Starts the appending task on the current runtime; it ends when the
    /// last `Appender` is dropped.
    pub fn start<S: Store>(store: Arc<S>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(append_groups(store, requests));
        Self { queue }
    }

    /// Appends `events` in order; answers once they are durable.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let stopped = || StoreError::Stopped("the event log");
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Request { events, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn append_groups<S: Store>(store: Arc<S>, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        // The requests' runtime has one thread (`cli::run`): letting the
        // connections whose requests are ready run first brings theirs into
        // this group, not the next. W1: a sixth fewer syncs for the same
        // events; the yield costs a lone request one turn of the loop.
        tokio::task::yield_now().await;
        let mut group = vec![first];
        while let Ok(next) = requests.try_recv() {
            group.push(next);
        }
        let sizes: Vec<usize> = group.iter().map(|r| r.events.len()).collect();
        let events = group
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.events))
            .collect();
        let appended = match store.append_events(events) {
            Ok(appended) => store.flush().await.map(|()| appended),
            Err(e) => Err(e),
        };
        answer(group, &sizes, appended);
    }
}

/// Gives each request its own part of the group's result, in order.
fn answer(group: Vec<Request>, sizes: &[usize], appended: Result<Vec<Appended>, StoreError>) {
    match appended {
        Ok(appended) => {
            let mut parts = appended.into_iter();
            for (request, size) in group.into_iter().zip(sizes) {
                let part = parts.by_ref().take(*size).collect();
                // A request whose client went away needs no answer.
                let _ = request.answer.send(Ok(part));
            }
        }
        Err(e) => {
            for request in group {
                let _ = request.answer.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventTable, KvStore, MemoryBackend};

    fn event(id: &str) -> NewEvent {
        NewEvent::form(id, "L1")
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_their_own_answers_in_order() {
        let store = Arc::new(KvStore::open(MemoryBackend::default(), "memory").unwrap());
        let appender = Appender::start(store.clone());
        let requests = (0..50).map(|i| {
            let appender = appender.clone();
            // Every request repeats the id of the one before it, so each
            // answer shows whether the group kept the requests apart.
            let ids = vec![format!("e{i}"), format!("e{}", i + 1)];
            tokio::spawn(async move {
                let answers = appender
                    .append(ids.iter().map(|id| event(id)).collect())
                    .await
                    .unwrap();
                (ids, answers)
            })
        });
        let mut duplicates = 0;
        for request in requests {
            let (ids, answers) = request.await.unwrap();
            let answered: Vec<&str> = answers.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(answered, ids);
            duplicates += answers.iter().filter(|a| a.duplicate).count();
        }
        // 51 distinct ids among 100 events, whatever the grouping was.
        assert_eq!(duplicates, 49);
        assert_eq!(store.events_after(0, 1_000).unwrap().len(), 51);
    }
}
