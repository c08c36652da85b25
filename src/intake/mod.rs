//! What enters from outside, checked before anything is stored: events in
//! dealflow's own JSON ([`event`]) and the payloads other tools post to a
//! source ([`verify`], then [`mapping`]).
//!
//! Owns: the checks and the mapping, as pure functions of the request, the
//! compiled workflows and the time. Never: stores, answers HTTP or runs
//! rules (the API and the simulator do, with what these functions give).

pub mod event;
pub mod mapping;
pub mod sms;
pub mod verify;
