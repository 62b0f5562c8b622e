//! [`BackendError`]: why a backend call failed. Each variant says whether
//! the caller's input was at fault or the backend (its store, transport or
//! own state); the HTTP API maps them to statuses from that (see
//! [`crate::http::error_response`]).

use kanade_core::names::InvalidToken;
use kanade_core::transport::ext::JsonCallError;
use kanade_core::transport::TransportError;

use crate::db::DbError;
use crate::manifest::ManifestErrors;
use crate::when::WhenError;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The manifest is invalid.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestErrors),
    /// A schedule's `when` cannot be lowered to a plan.
    #[error(transparent)]
    When(#[from] WhenError),
    /// The caller may not do this (an approval rule, a scope).
    #[error(transparent)]
    Denied(#[from] crate::auth::Denial),
    /// No such job, schedule or execution.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A name in the request (group, pc, execution id) cannot be a subject
    /// token.
    #[error(transparent)]
    Token(#[from] InvalidToken),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A database call on the blocking pool never finished (it panicked or
    /// was cancelled).
    #[error("database task failed: {0}")]
    DbTask(#[source] tokio::task::JoinError),
    /// A record could not be encoded as JSON.
    #[error(transparent)]
    Encode(serde_json::Error),
    /// A stored record cannot be decoded.
    #[error("{what} unreadable: {source}")]
    Corrupt {
        /// Which record (`job <id>`, `schedule <id>`).
        what: String,
        /// Why it does not decode.
        source: serde_json::Error,
    },
    /// The backend's own state breaks an invariant (e.g. a stored job
    /// without its script).
    #[error("{0}")]
    Internal(String),
}

impl From<JsonCallError> for BackendError {
    /// A JSON convenience call's failure: encoding is the backend's fault,
    /// an undecodable stored record is [`BackendError::Corrupt`].
    fn from(error: JsonCallError) -> Self {
        match error {
            JsonCallError::Encode { source, .. } => BackendError::Encode(source),
            JsonCallError::Decode { what, source } => BackendError::Corrupt { what, source },
            JsonCallError::Transport(e) => BackendError::Transport(e),
            other => BackendError::Internal(other.to_string()),
        }
    }
}

impl BackendError {
    /// Whether the backend, not the caller's input, is at fault (the HTTP
    /// API answers 500 for these).
    pub fn is_internal(&self) -> bool {
        match self {
            BackendError::Manifest(_)
            | BackendError::When(_)
            | BackendError::NotFound(_)
            | BackendError::Denied(_)
            | BackendError::Invalid(_)
            | BackendError::Token(_) => false,
            BackendError::Transport(_)
            | BackendError::Db(_)
            | BackendError::DbTask(_)
            | BackendError::Encode(_)
            | BackendError::Corrupt { .. }
            | BackendError::Internal(_) => true,
        }
    }
}
