//! dealflow: a daemon that runs a sales team's workflow from a folder of YAML.
//!
//! The layout follows the data: `config` reads a workflow folder and compiles
//! it into an immutable [`config::Workflows`]; later modules (engine, store,
//! scheduler, delivery, api, reload) run it. `cli` holds the commands.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod state;
pub mod store;
pub mod worker;
