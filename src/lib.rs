//! dealflow: a daemon that runs a sales team's workflow from a folder of YAML.
//!
//! The layout follows the data:
//! - `config` reads a workflow folder and compiles it into an immutable
//!   [`config::Workflows`] (the one path for `validate`, startup and reload);
//! - `api` takes events over HTTP and appends them to the log in `store`
//!   (durable before the `202`); `intake` checks them first, and verifies
//!   and maps the payloads other tools post to a source (`/hooks/NAME`);
//! - `worker` is the single writer: it feeds logged events in order to the
//!   pure `engine` and commits what the engine answers, cursor included;
//! - `delivery` hands outbox rows to a mail server or a webhook, once, with
//!   retries, limits, unsubscribe links and inbound mail;
//! - `scheduler` turns due timers and schedule slots into logged events and
//!   knows send windows; the worker fires them between rounds;
//! - `simulation` runs the worker's own loop on a virtual clock over an
//!   in-memory store (`simulate`, `test`);
//! - `state` holds the durable types, `clock` the only reading of time,
//!   `cli` the commands.
//!
//! - `console` serves the web pages for managers, reps and admins beside
//!   the API, from the same handles, with sessions and CSRF of its own;
//! - `reload` watches the folder and swaps a new, valid set in whole;
//! - `report` computes pipeline, sequence and owner reports from the store;
//! - `telemetry` records Prometheus metrics; `signature` is the one HMAC
//!   code, for webhooks sent and payloads received; `causes` walks an
//!   error's causes.
#![forbid(unsafe_code)]

pub mod api;
pub mod causes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod engine;
pub mod intake;
pub mod mailbox;
pub mod reload;
pub mod report;
pub mod scheduler;
pub mod signature;
pub mod simulation;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod worker;
