//! Object stores: named blobs, streamed in and out, with sha256 digests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use super::TransportResult;

/// An object store bucket's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    /// Bucket name.
    pub bucket: String,
}

impl ObjectStoreConfig {
    /// A bucket named `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
        }
    }
}

/// Facts about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    /// When it was written.
    pub modified: DateTime<Utc>,
}

/// A streaming object body.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// One object store bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The bucket's name.
    fn bucket(&self) -> &str;
    /// Stores (or replaces) `name`, streaming the body from `reader`.
    async fn put(
        &self,
        name: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo>;
    /// Streams `name`'s body.
    async fn get(&self, name: &str) -> TransportResult<ObjectReader>;
    /// Facts about `name`.
    async fn info(&self, name: &str) -> TransportResult<ObjectInfo>;
    /// Removes `name`.
    async fn delete(&self, name: &str) -> TransportResult<()>;
    /// Every object, sorted by name.
    async fn list(&self) -> TransportResult<Vec<ObjectInfo>>;
}
