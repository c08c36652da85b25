//! `GET /v1/backup`: a consistent snapshot of the running store, streamed
//! as it is written (see `store::backup`); ingest goes on meanwhile.

use super::{ApiError, App};
use crate::store::Store;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is sent to the client.
const CHUNK: usize = 256 * 1024;

pub(super) async fn get_backup<S: Store>(
    State(app): State<Arc<App<S>>>,
) -> Result<Response, ApiError> {
    let (chunks, received) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let store = app.store.clone();
    let key = app.unsubscribe.bytes().to_vec();
    let now = app.clock.now();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            chunks: chunks.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        match store.backup_to(&mut out, Some(&key), now) {
            Ok(summary) => {
                tracing::info!(
                    keys = summary.keys,
                    batches = summary.batches,
                    "Backup written."
                );
            }
            Err(e) => {
                // The client sees the body end with an error: its file
                // fails the checksum, never passes for a whole backup.
                tracing::warn!(error = %e, "Backup failed.");
                let _ = chunks.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|chunk| (chunk, received))
    });
    let name = format!("dealflow-{}.backup", now.format("%Y%m%dT%H%M%SZ"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Hands what the backup writes to the response, a chunk at a time; an
/// error once the client went away, which stops the backup.
struct ChannelWriter {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.chunks.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
