//! Mapping async-nats errors into the core [`TransportError`].
//!
//! Errors are told apart by their async-nats *kind* (`…ErrorKind::TimedOut`,
//! `PublishErrorKind::BrokenPipe`, …), by the JetStream API error code they
//! carry ([`ErrorCode`]), or by an underlying [`std::io::ErrorKind`] —
//! never by the text of their message, which async-nats and the server may
//! reword at any release.

use std::error::Error as StdError;
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode};
use kanade_core::transport::TransportError;

/// What an async-nats error means for the caller, read off its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// No answer in time.
    TimedOut,
    /// The connection is gone (broken pipe).
    Disconnected,
    /// Something (stream, consumer, message, object) does not exist.
    NotFound,
    /// The server's JetStream API refused the call with this code.
    Api(ErrorCode),
    /// Anything else.
    Other,
}

/// The first decisive cause along `error`'s source chain: an error whose
/// kind only says "this step failed" (`Other`, `Request`, `Publish`, …)
/// defers to its source.
pub(crate) fn cause(error: &(dyn StdError + 'static)) -> Cause {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(cause) = own_cause(error) {
            return cause;
        }
        next = error.source();
    }
    Cause::Other
}

/// A JetStream API error's cause: "not found" codes are [`Cause::NotFound`].
fn api(error: &jetstream::Error) -> Cause {
    match error.error_code() {
        ErrorCode::STREAM_NOT_FOUND
        | ErrorCode::CONSUMER_NOT_FOUND
        | ErrorCode::NO_MESSAGE_FOUND => Cause::NotFound,
        code => Cause::Api(code),
    }
}

/// Tries each listed error type in turn; the first that `error` is decides
/// by its kind (`None`: the kind does not decide, look at the source).
macro_rules! by_kind {
    ($error:ident; $($ty:ty => |$kind:ident| $decide:expr),+ $(,)?) => {
        $(
            if let Some(typed) = $error.downcast_ref::<$ty>() {
                let $kind = typed.kind();
                return $decide;
            }
        )+
    };
}

/// What one error's own kind says, without looking at its source.
fn own_cause(error: &(dyn StdError + 'static)) -> Option<Cause> {
    use async_nats::jetstream::consumer::StreamErrorKind as ConsumerStreamKind;
    use async_nats::jetstream::context::{
        ConsumerInfoErrorKind as ConsumerInfoKind, CreateKeyValueErrorKind as CreateKvKind,
        CreateStreamErrorKind as CreateStreamKind, GetStreamErrorKind as GetStreamKind,
        PublishErrorKind as JsPublishKind, RequestErrorKind as JsRequestKind,
        UpdateKeyValueErrorKind as UpdateKvKind,
    };
    use async_nats::jetstream::kv::{
        EntryErrorKind as KvEntryKind, StatusErrorKind as KvStatusKind,
        UpdateErrorKind as KvUpdateKind, WatchErrorKind as KvWatchKind,
    };
    use async_nats::jetstream::object_store::{
        DeleteErrorKind as ObjDeleteKind, GetErrorKind as ObjGetKind, InfoErrorKind as ObjInfoKind,
        PutErrorKind as ObjPutKind, WatchErrorKind as ObjWatchKind,
    };
    use async_nats::jetstream::stream::{
        ConsumerErrorKind as StreamConsumerKind, DirectGetErrorKind as DirectGetKind,
        LastRawMessageErrorKind as LastRawKind,
    };
    use async_nats::{ConnectErrorKind, RequestErrorKind};

    by_kind!(error;
        // Core NATS.
        async_nats::RequestError => |kind| match kind {
            RequestErrorKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        async_nats::PublishError => |kind| match kind {
            // The client's connection task is gone: nothing can be sent.
            async_nats::client::PublishErrorKind::Send => Some(Cause::Disconnected),
            _ => None,
        },
        async_nats::ConnectError => |kind| match kind {
            ConnectErrorKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        // JetStream context.
        jetstream::context::PublishError => |kind| match kind {
            JsPublishKind::TimedOut => Some(Cause::TimedOut),
            JsPublishKind::BrokenPipe => Some(Cause::Disconnected),
            JsPublishKind::StreamNotFound => Some(Cause::NotFound),
            _ => None,
        },
        jetstream::context::RequestError => |kind| match kind {
            JsRequestKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::context::GetStreamError => |kind| match kind {
            GetStreamKind::JetStream(error) => Some(api(&error)),
            _ => None,
        },
        jetstream::context::CreateStreamError => |kind| match kind {
            CreateStreamKind::TimedOut => Some(Cause::TimedOut),
            CreateStreamKind::NotFound => Some(Cause::NotFound),
            CreateStreamKind::JetStream(error) => Some(api(&error)),
            _ => None,
        },
        jetstream::context::ConsumerInfoError => |kind| match kind {
            ConsumerInfoKind::TimedOut => Some(Cause::TimedOut),
            ConsumerInfoKind::NotFound | ConsumerInfoKind::StreamNotFound => {
                Some(Cause::NotFound)
            }
            ConsumerInfoKind::JetStream(error) => Some(api(&error)),
            _ => None,
        },
        jetstream::context::CreateKeyValueError => |kind| match kind {
            CreateKvKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::context::UpdateKeyValueError => |kind| match kind {
            UpdateKvKind::TimedOut => Some(Cause::TimedOut),
            UpdateKvKind::NotFound => Some(Cause::NotFound),
            _ => None,
        },
        // Streams and consumers.
        jetstream::stream::ConsumerError => |kind| match kind {
            StreamConsumerKind::TimedOut => Some(Cause::TimedOut),
            StreamConsumerKind::JetStream(error) => Some(api(&error)),
            _ => None,
        },
        jetstream::stream::DirectGetError => |kind| match kind {
            DirectGetKind::TimedOut => Some(Cause::TimedOut),
            DirectGetKind::NotFound => Some(Cause::NotFound),
            _ => None,
        },
        jetstream::stream::LastRawMessageError => |kind| match kind {
            LastRawKind::NoMessageFound => Some(Cause::NotFound),
            LastRawKind::JetStream(error) => Some(api(&error)),
            _ => None,
        },
        jetstream::consumer::StreamError => |kind| match kind {
            ConsumerStreamKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        // Key-value.
        jetstream::kv::EntryError => |kind| match kind {
            KvEntryKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::kv::UpdateError => |kind| match kind {
            KvUpdateKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::kv::WatchError => |kind| match kind {
            KvWatchKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::kv::StatusError => |kind| match kind {
            KvStatusKind::TimedOut => Some(Cause::TimedOut),
            KvStatusKind::JetStream(error) => Some(api(&error)),
        },
        // Object store.
        jetstream::object_store::InfoError => |kind| match kind {
            ObjInfoKind::TimedOut => Some(Cause::TimedOut),
            ObjInfoKind::NotFound => Some(Cause::NotFound),
            _ => None,
        },
        jetstream::object_store::GetError => |kind| match kind {
            ObjGetKind::TimedOut => Some(Cause::TimedOut),
            ObjGetKind::NotFound => Some(Cause::NotFound),
            _ => None,
        },
        jetstream::object_store::DeleteError => |kind| match kind {
            ObjDeleteKind::TimedOut => Some(Cause::TimedOut),
            ObjDeleteKind::NotFound => Some(Cause::NotFound),
            _ => None,
        },
        jetstream::object_store::PutError => |kind| match kind {
            ObjPutKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
        jetstream::object_store::WatchError => |kind| match kind {
            ObjWatchKind::TimedOut => Some(Cause::TimedOut),
            _ => None,
        },
    );
    if let Some(error) = error.downcast_ref::<jetstream::Error>() {
        return Some(api(error));
    }
    if let Some(error) = error.downcast_ref::<std::io::Error>() {
        return match error.kind() {
            std::io::ErrorKind::TimedOut => Some(Cause::TimedOut),
            std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::UnexpectedEof => Some(Cause::Disconnected),
            _ => None,
        };
    }
    None
}

/// Wraps any error as a (retryable) backend failure, or as `Timeout` /
/// `Disconnected` when its kind (or its source's) says it timed out or
/// lost the connection.
pub(crate) fn backend<E>(context: &str, error: E) -> TransportError
where
    E: StdError + Send + Sync + 'static,
{
    match cause(&error) {
        Cause::TimedOut => TransportError::Timeout(Duration::ZERO),
        Cause::Disconnected => TransportError::Disconnected(format!("{context}: {error}")),
        Cause::NotFound | Cause::Api(_) | Cause::Other => {
            TransportError::Backend(format!("{context}: {error}").into())
        }
    }
}

/// Like [`backend`], for creating a stream, bucket or object store while
/// provisioning: a refusal for want of storage (JetStream codes 10047,
/// 10023, 10002) becomes [`TransportError::InvalidConfig`] saying what to
/// change — the server's `max_file_store`, which by default is 75% of the
/// disk space free when the server started, must hold
/// [`RESERVED_STREAM_BYTES`](kanade_core::names::RESERVED_STREAM_BYTES).
pub(crate) fn provisioning<E>(context: &str, error: E) -> TransportError
where
    E: StdError + Send + Sync + 'static,
{
    match cause(&error) {
        Cause::Api(code) if is_storage_refusal(code) => {
            TransportError::InvalidConfig(storage_refusal_message(context, &error.to_string()))
        }
        _ => backend(context, error),
    }
}

/// The JetStream codes that mean "not enough storage left to reserve".
fn is_storage_refusal(code: ErrorCode) -> bool {
    [
        ErrorCode::STORAGE_RESOURCES_EXCEEDED,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
    ]
    .contains(&code)
}

/// What an operator reads when the server cannot reserve kanade's streams.
pub(crate) fn storage_refusal_message(context: &str, error: &str) -> String {
    let mib = kanade_core::names::RESERVED_STREAM_BYTES >> 20;
    format!(
        "{context}: {error}: the JetStream server has too little storage left to reserve kanade's streams \
         ({mib} MiB in all, counted when each stream is created whether or not it fills); \
         set `max_file_store` in the server's `jetstream` block to at least {gib} GiB \
         (by default it is 75% of the disk space free when the server started), or free disk space and restart it",
        gib = mib.div_ceil(1024) + 1,
    )
}

/// Maps a JetStream API error by code.
pub(crate) fn jetstream(context: &str, what: &str, error: &jetstream::Error) -> TransportError {
    match error.error_code() {
        ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND => {
            TransportError::not_found(what.to_owned())
        }
        ErrorCode::STREAM_SUBJECT_OVERLAP | ErrorCode::STREAM_NAME_EXIST => {
            TransportError::InvalidConfig(format!("{context} {what}: {error}"))
        }
        _ => TransportError::Backend(format!("{context} {what}: {error}").into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use async_nats::jetstream::context::{PublishError, PublishErrorKind, RequestError};
    use async_nats::jetstream::kv;

    use super::*;

    #[test]
    fn kinds_decide_not_text() {
        let timed_out = PublishError::new(PublishErrorKind::TimedOut);
        assert!(matches!(
            backend("publishing", timed_out),
            TransportError::Timeout(_)
        ));
        let broken = PublishError::new(PublishErrorKind::BrokenPipe);
        assert!(matches!(
            backend("publishing", broken),
            TransportError::Disconnected(_)
        ));
        // A wrapper kind defers to its source.
        let wrapped = kv::CreateError::with_source(
            kv::CreateErrorKind::Publish,
            kv::UpdateError::new(kv::UpdateErrorKind::TimedOut),
        );
        assert!(matches!(
            backend("creating", wrapped),
            TransportError::Timeout(_)
        ));
        let io = RequestError::with_source(
            async_nats::jetstream::context::RequestErrorKind::Other,
            io::Error::from(io::ErrorKind::BrokenPipe),
        );
        assert!(matches!(
            backend("stream info", io),
            TransportError::Disconnected(_)
        ));
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::NotConnected,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert!(
                matches!(
                    backend("fetching", io::Error::from(kind)),
                    TransportError::Disconnected(_)
                ),
                "{kind:?}"
            );
        }
        let closed = async_nats::PublishError::new(async_nats::client::PublishErrorKind::Send);
        assert!(matches!(
            backend("publishing", closed),
            TransportError::Disconnected(_)
        ));
        // Text that merely mentions a timeout is not a timeout.
        let other = io::Error::other("the timeout setting is invalid; connection closed");
        assert!(matches!(backend("x", other), TransportError::Backend(_)));
    }
}
