//! The transport contract: three object-safe traits ([`MessageLog`],
//! [`KeyValue`], [`ObjectStore`]) and the [`Transport`] bundle that hands
//! them out with its [`Capabilities`].
//!
//! Agent and backend code see only these traits. Implementations:
//! [`memory`] (in-process, deterministic under paused tokio time), the file
//! transport and `kanade-transport-nats`. Every implementation runs the
//! shared [`conformance`] suite; [`fault`] wraps any of them with seeded
//! network faults.
//!
//! # Cancel safety
//!
//! Every waiting `next()` of the contract — [`MessageStream::next`] (a
//! [`Subscription`]), [`Consumer::next`] and [`KvWatch::next`] — is
//! cancel-safe: dropping its future before it completes, as a losing
//! `tokio::select!` branch or under `tokio::time::timeout`, never loses a
//! message. Whatever the dropped call had already taken is returned by the
//! next call on the same handle, in order (a consumer does not count it as
//! another delivery). Only dropping the handle itself discards what it holds:
//! an ephemeral subscription's buffered messages are gone, a durable
//! consumer's unacknowledged ones are redelivered after `ack_wait`. An
//! implementation therefore never keeps a taken message in a local variable
//! across an `.await` inside `next()`; it parks it in the handle. The
//! conformance check `cancelled_next_loses_nothing` holds every
//! implementation to this.
//!
//! # Plugging in your own transport
//!
//! Implement [`Transport`] (and the three traits it hands out), then run the
//! suite against a factory that makes a fresh instance. Here the "custom"
//! transport simply delegates to [`memory::MemoryTransport`]:
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use kanade_core::transport::*;
//!
//! struct MyTransport(memory::MemoryTransport);
//!
//! #[async_trait]
//! impl Transport for MyTransport {
//!     fn capabilities(&self) -> Capabilities { self.0.capabilities() }
//!     fn messages(&self) -> Arc<dyn MessageLog> { self.0.messages() }
//!     async fn key_value(&self, config: KvConfig) -> Result<Arc<dyn KeyValue>, TransportError> {
//!         self.0.key_value(config).await
//!     }
//!     async fn object_store(&self, config: ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>, TransportError> {
//!         self.0.object_store(config).await
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let report = conformance::run_all(|| async {
//!     Arc::new(MyTransport(memory::MemoryTransport::new())) as Arc<dyn Transport>
//! })
//! .await;
//! report.assert_passed();
//! # });
//! ```

mod capabilities;
pub mod conformance;
mod error;
pub mod ext;
pub mod fault;
pub mod file;
mod kv;
pub mod memory;
mod messages;
mod object;
mod retention;
pub mod subject;
mod subject_index;
pub mod url;

use std::sync::Arc;

use async_trait::async_trait;

pub use capabilities::Capabilities;
pub use error::{TransportError, TransportResult};
pub use kv::{KeyValue, KvConfig, KvEntry, KvOperation, KvWatch};
pub use messages::{
    AckHandle, ArrivalGate, Consumer, ConsumerConfig, DeliverPolicy, Delivery, Headers, Message,
    MessageLog, MessageStream, PublishAck, StreamConfig, StreamInfo, Subscription,
    MESSAGE_ID_HEADER,
};
pub use object::{ObjectInfo, ObjectReader, ObjectStore, ObjectStoreConfig};

/// A whole transport: one message log, KV buckets and object stores.
///
/// Cheap handles: implementations are `Arc`-backed, and every method may be
/// called concurrently.
#[async_trait]
pub trait Transport: Send + Sync {
    /// What this transport can and cannot do.
    fn capabilities(&self) -> Capabilities;
    /// The message log (publish, subscribe, streams, consumers).
    fn messages(&self) -> Arc<dyn MessageLog>;
    /// Opens a KV bucket, creating it if needed (idempotent).
    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>>;
    /// Opens an object store bucket, creating it if needed (idempotent).
    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>>;
}
