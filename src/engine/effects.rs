//! What the engine answers, and the one way a read of state can fail it.
//!
//! It answers [`Effects`] (a durable-state type the store also knows, see
//! `state::effects`) that the caller turns into one atomic commit, and it
//! reads through [`super::StateView`], whose failures are [`ReadError`]s,
//! the engine's own. Neither names the store, so the engine depends on no
//! storage, and a storage change never reaches it.

pub use crate::state::Effects;
use std::error::Error;
use std::sync::Arc;

/// Reading state failed, so the event is not handled: the caller tries it
/// again, or sets it aside when the failure is about the data itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct ReadError {
    /// What the state's owner said, kept whole for the caller.
    cause: Arc<dyn Error + Send + Sync>,
    /// Whether trying again cannot help (a value that does not decode).
    about_data: bool,
}

impl ReadError {
    /// A failed read, caused by `cause`; `about_data` when retrying cannot
    /// help.
    pub fn new(cause: impl Error + Send + Sync + 'static, about_data: bool) -> Self {
        ReadError {
            cause: Arc::new(cause),
            about_data,
        }
    }

    /// Whether the failure is about the data, so retrying cannot help.
    pub fn is_about_data(&self) -> bool {
        self.about_data
    }

    /// The state owner's own error.
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.cause.as_ref()
    }
}
