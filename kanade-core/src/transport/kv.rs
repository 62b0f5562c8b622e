//! Key-value buckets with revisions, history and watches.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::TransportResult;

/// A bucket's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Bucket name.
    pub bucket: String,
    /// Entries kept per key, latest included (at least 1).
    pub history: usize,
    /// Entries expire this long after they were written (`None`: never).
    pub ttl: Option<Duration>,
}

impl KvConfig {
    /// A bucket keeping only the latest value, with no TTL.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            history: 1,
            ttl: None,
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOperation {
    /// A value was written.
    Put,
    /// The key was deleted (the entry's value is empty).
    Delete,
}

/// One revision of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value (empty for a delete).
    pub value: Bytes,
    /// Bucket-wide revision of this write.
    pub revision: u64,
    /// Put or delete.
    pub operation: KvOperation,
}

/// A watch: current values first, then every change.
#[async_trait]
pub trait KvWatch: Send {
    /// The next entry, or `None` when the watch has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, like [`MessageStream::next`](super::MessageStream::next):
    /// dropping the future before it completes loses no entry; it is
    /// returned by the next call.
    async fn next(&mut self) -> Option<KvEntry>;
}

/// One key-value bucket.
#[async_trait]
pub trait KeyValue: Send + Sync {
    /// The bucket's name.
    fn bucket(&self) -> &str;
    /// The key's latest value, or `None` if absent or deleted.
    async fn get(&self, key: &str) -> TransportResult<Option<KvEntry>>;
    /// Writes a value; returns its revision.
    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64>;
    /// Writes a value only if the key is absent (or deleted); otherwise
    /// [`TransportError::AlreadyExists`](super::TransportError::AlreadyExists).
    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64>;
    /// Writes a value only if the key's latest revision is `expected`;
    /// otherwise [`TransportError::RevisionMismatch`](super::TransportError::RevisionMismatch).
    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64>;
    /// Deletes the key (recorded in its history).
    async fn delete(&self, key: &str) -> TransportResult<()>;
    /// Keys with a current value, sorted.
    async fn keys(&self) -> TransportResult<Vec<String>>;
    /// Watches keys matching `pattern` (subject wildcard rules; `>` for all):
    /// yields each current value, then every later put and delete.
    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>>;
    /// The key's kept entries, oldest first.
    async fn history(&self, key: &str) -> TransportResult<Vec<KvEntry>>;
}
