//! Mapping async-nats errors into the core [`TransportError`].

use std::time::Duration;

use kanade_core::transport::TransportError;

/// JetStream API error codes we map specially.
pub(crate) mod codes {
    /// Stream not found.
    pub const STREAM_NOT_FOUND: usize = 10059;
    /// Consumer not found.
    pub const CONSUMER_NOT_FOUND: usize = 10014;
    /// Subjects overlap with an existing stream.
    pub const SUBJECTS_OVERLAP: usize = 10065;
    /// Stream name in use with a different configuration.
    pub const STREAM_NAME_IN_USE: usize = 10058;
}

/// Wraps any error as a (retryable) backend failure, or as `Timeout` /
/// `Disconnected` when its text says so.
pub(crate) fn backend<E>(context: &str, error: E) -> TransportError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return TransportError::Timeout(Duration::ZERO);
    }
    if lower.contains("disconnected")
        || lower.contains("broken pipe")
        || lower.contains("connection") && lower.contains("closed")
    {
        return TransportError::Disconnected(format!("{context}: {text}"));
    }
    TransportError::Backend(format!("{context}: {text}").into())
}

/// Maps a JetStream API error by code.
pub(crate) fn jetstream(
    context: &str,
    what: &str,
    error: &async_nats::jetstream::Error,
) -> TransportError {
    match error.error_code().0 as usize {
        codes::STREAM_NOT_FOUND | codes::CONSUMER_NOT_FOUND => {
            TransportError::not_found(what.to_owned())
        }
        codes::SUBJECTS_OVERLAP | codes::STREAM_NAME_IN_USE => {
            TransportError::InvalidConfig(format!("{context} {what}: {error}"))
        }
        _ => TransportError::Backend(format!("{context} {what}: {error}").into()),
    }
}
