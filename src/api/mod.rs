//! The HTTP API (SPEC §5): axum routes, bearer-token auth, body limits and
//! JSON error bodies. Every shape is documented in `docs/API.md`.
//! Handlers never change state themselves except through the event log, the
//! worker's commands, or one atomic store commit.
//!
//! Owns: HTTP shapes, auth, request limits. Never: runs workflow logic (the
//! engine does), sends anything (delivery does), or answers before what it
//! acknowledges is durable.

mod appender;
mod auth;
mod backup;
mod error;
mod events;
mod extract;
mod kept;
mod mail;
pub(crate) mod outbox;
mod plan;
pub(crate) mod records;
mod reports;
mod routes;
mod runs;
mod server;
mod sms;
pub use sms::SOURCE as SMS_SOURCE;
pub(crate) mod sources;
mod status;
mod suppressions;
pub(crate) mod tasks;
mod unnamed_kinds;

pub use appender::Appender;
pub use auth::token_matches;
pub use error::ApiError;
pub use routes::router;
pub use server::{DEFAULT_READ_TIMEOUT, serve};
pub use unnamed_kinds::UnnamedKinds;

use crate::clock::Clock;
use crate::config::Workflows;
use crate::store::Store;
use crate::worker::WorkerHandle;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Request bodies larger than this are answered 413 unless `--max-body` says otherwise.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// What every handler can reach.
pub struct App<S: Store> {
    /// The store.
    pub store: Arc<S>,
    /// The running workflow set (swapped whole on reload).
    pub workflows: Arc<ArcSwap<Workflows>>,
    /// Appends posted events to the log, durably, in groups.
    pub appender: Appender,
    /// The engine worker.
    pub worker: WorkerHandle,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Required bearer token, when set.
    pub token: Option<String>,
    /// Reload state (when loaded, the last failure).
    pub reload: Arc<crate::reload::ReloadStatus>,
    /// Asks for reloads.
    pub reloader: crate::reload::Reloader,
    /// Renders `/metrics` (`None` when another recorder was installed first).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The workflow folder.
    pub workflows_dir: String,
    /// Largest request body.
    pub max_body: usize,
    /// Longest wait for a request's body.
    pub read_timeout: std::time::Duration,
    /// Signs and checks unsubscribe links.
    pub unsubscribe: crate::delivery::unsubscribe::UnsubscribeKey,
    /// Events stored for kinds no workflow names, shown in `/v1/status`.
    pub unnamed_kinds: UnnamedKinds,
    /// Delivery failures on the sender's side, shown in `/v1/status`.
    pub delivery_health: Arc<crate::delivery::health::DeliveryHealth>,
    /// What each IMAP mailbox is doing, shown in `/v1/status`.
    pub mailbox_health: Arc<crate::mailbox::health::MailboxHealth>,
    /// Whether the engine worker is retrying a failed round.
    pub engine_health: Arc<crate::worker::health::EngineHealth>,
}
