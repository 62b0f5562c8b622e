//! Conveniences over the transport traits, as extension traits with blanket
//! impls (the shape of object_store's `ObjectStoreExt` and tower's
//! `ServiceExt`): the core traits stay small and object-safe, and every
//! `MessageLog` / `KeyValue` (including `Arc<dyn …>` handles) gets
//! publish / get / put of a serialisable value for free.
//!
//! Values travel as JSON, the wire contract's encoding (DESIGN §2).
//!
//! ```
//! use kanade_core::transport::ext::{KeyValueExt, MessageLogExt};
//! use kanade_core::transport::{memory::MemoryTransport, Headers, KvConfig, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let transport = MemoryTransport::new();
//! let log = transport.messages();
//! let mut sub = log.subscribe("greetings.>").await.unwrap();
//! log.publish_json("greetings.en", Headers::new(), &serde_json::json!({"text": "hi"}))
//!     .await
//!     .unwrap();
//! let message = sub.next().await.unwrap();
//! assert_eq!(message.payload.as_ref(), br#"{"text":"hi"}"#);
//!
//! let kv = transport.key_value(KvConfig::new("settings")).await.unwrap();
//! kv.put_json("limits", &vec![1, 2, 3]).await.unwrap();
//! let limits: Option<Vec<u32>> = kv.get_json("limits").await.unwrap();
//! assert_eq!(limits, Some(vec![1, 2, 3]));
//! # });
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Headers, KeyValue, MessageLog, ObjectStore, PublishAck, TransportError};

/// A JSON convenience call failed: encoding the value, decoding what was
/// stored, or the transport call itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonCallError {
    /// The value could not be encoded as JSON (a map with non-string keys,
    /// a failing `Serialize` impl).
    #[error("encoding {what} as JSON: {source}")]
    Encode {
        /// What was being encoded (the subject or key).
        what: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// What was stored is not JSON of the expected shape.
    #[error("decoding {what}: {source}")]
    Decode {
        /// What was being decoded (the key).
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The transport call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Encodes `value` as JSON bytes, naming `what` on failure.
///
/// # Errors
/// [`JsonCallError::Encode`] when serialisation fails.
pub fn to_json_bytes<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Bytes, JsonCallError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| JsonCallError::Encode {
            what: what.to_owned(),
            source,
        })
}

/// Publish of a serialisable value, for every [`MessageLog`].
#[async_trait]
pub trait MessageLogExt: MessageLog {
    /// Encodes `value` as JSON and publishes it on `subject`; returns the
    /// stream ack as [`MessageLog::publish`] does.
    ///
    /// # Errors
    /// [`JsonCallError::Encode`] (nothing is published) or the publish's
    /// [`TransportError`].
    async fn publish_json<T: Serialize + Sync + ?Sized>(
        &self,
        subject: &str,
        headers: Headers,
        value: &T,
    ) -> Result<Option<PublishAck>, JsonCallError> {
        let payload = to_json_bytes(subject, value)?;
        Ok(self.publish(subject, headers, payload).await?)
    }
}

impl<L: MessageLog + ?Sized> MessageLogExt for L {}

/// Get and put of serialisable values, for every [`KeyValue`] bucket.
#[async_trait]
pub trait KeyValueExt: KeyValue {
    /// The latest value of `key` decoded from JSON; `None` when the key is
    /// absent or deleted.
    ///
    /// # Errors
    /// [`JsonCallError::Decode`] when the stored bytes are not a `T`, or
    /// the get's [`TransportError`].
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, JsonCallError> {
        let Some(entry) = self.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&entry.value)
            .map(Some)
            .map_err(|source| JsonCallError::Decode {
                what: format!("key {key:?} in bucket {}", self.bucket()),
                source,
            })
    }

    /// Encodes `value` as JSON and puts it under `key`; returns the new
    /// revision.
    ///
    /// # Errors
    /// [`JsonCallError::Encode`] (nothing is written) or the put's
    /// [`TransportError`].
    async fn put_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, JsonCallError> {
        let payload = to_json_bytes(key, value)?;
        Ok(self.put(key, payload).await?)
    }

    /// Encodes `value` as JSON and creates `key` with it (fails with
    /// [`TransportError::AlreadyExists`] when the key is there); returns
    /// the new revision.
    ///
    /// # Errors
    /// [`JsonCallError::Encode`] (nothing is written) or the create's
    /// [`TransportError`].
    async fn create_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, JsonCallError> {
        let payload = to_json_bytes(key, value)?;
        Ok(self.create(key, payload).await?)
    }
}

impl<K: KeyValue + ?Sized> KeyValueExt for K {}

/// Whole-object reads for every [`ObjectStore`].
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// At most `limit` bytes of object `name` (pass one more than the
    /// largest size you accept to tell "too large" from "just fits"). A
    /// read that fails midway is [`TransportError::Backend`].
    async fn get_bytes(&self, name: &str, limit: u64) -> Result<Vec<u8>, TransportError> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        self.get(name)
            .await?
            .take(limit)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| TransportError::Backend(Box::new(e)))?;
        Ok(bytes)
    }
}

impl<O: ObjectStore + ?Sized> ObjectStoreExt for O {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::transport::memory::MemoryTransport;
    use crate::transport::{KvConfig, Transport};

    #[tokio::test]
    async fn a_value_that_cannot_be_encoded_is_not_published() {
        let transport = MemoryTransport::new();
        let log = transport.messages();
        let mut sub = log.subscribe("x").await.unwrap();
        // JSON object keys must be strings.
        let mut bad = BTreeMap::new();
        bad.insert(vec![1u8], 1);
        let err = log
            .publish_json("x", Headers::new(), &bad)
            .await
            .unwrap_err();
        assert!(matches!(err, JsonCallError::Encode { .. }), "{err}");
        log.publish_json("x", Headers::new(), &1).await.unwrap();
        assert_eq!(sub.next().await.unwrap().payload.as_ref(), b"1");
    }

    #[tokio::test]
    async fn a_stored_value_of_another_shape_is_a_decode_error_naming_the_key() {
        let transport = MemoryTransport::new();
        let kv = transport.key_value(KvConfig::new("b")).await.unwrap();
        kv.put("k", Bytes::from_static(b"not json")).await.unwrap();
        let err = kv.get_json::<u32>("k").await.unwrap_err();
        assert!(err.to_string().contains("\"k\""), "{err}");
        assert!(kv.get_json::<u32>("absent").await.unwrap().is_none());
        let revision = kv.put_json("n", &7u32).await.unwrap();
        assert!(revision > 0);
        assert_eq!(kv.get_json::<u32>("n").await.unwrap(), Some(7));
    }
}
