//! [`TransportError`]: the one error type every transport reports.

use std::time::Duration;

/// Result alias used by every transport call.
pub type TransportResult<T> = Result<T, TransportError>;

/// A transport call failed. Says whether retrying can help
/// ([`TransportError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The stream, bucket, key, object or consumer does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `key "pcs.a" in bucket agent_config`.
        what: String,
    },
    /// `create` on something that already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was being created.
        what: String,
    },
    /// Compare-and-swap lost: the key moved on.
    #[error("revision mismatch on {key:?}: expected {expected}, found {actual}")]
    RevisionMismatch {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The key's actual latest revision (0 when absent).
        actual: u64,
    },
    /// The payload exceeds the transport's limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// The transport's limit.
        limit: usize,
    },
    /// The transport is not connected.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// No answer in time (for a publish: the ack never came, the message may
    /// or may not be stored).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A subject or pattern is malformed.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The subject or pattern.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A configuration was rejected (e.g. a stream redefined with other subjects).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The operation is outside this transport's capabilities.
    #[error("not supported by this transport: {0}")]
    Unsupported(&'static str),
    /// The underlying backend failed.
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TransportError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Disconnected(_)
                | TransportError::Timeout(_)
                | TransportError::Backend(_)
        )
    }

    /// Builds a [`TransportError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        TransportError::NotFound { what: what.into() }
    }

    /// Builds a [`TransportError::AlreadyExists`].
    pub fn already_exists(what: impl Into<String>) -> Self {
        TransportError::AlreadyExists { what: what.into() }
    }
}
