//! The faulty key-value bucket and object store: every call fails while
//! the transport is down, and otherwise passes straight through.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::injector::FaultInjector;
use crate::transport::{
    KeyValue, KvEntry, KvWatch, ObjectInfo, ObjectReader, ObjectStore, TransportResult,
};

pub(super) struct FaultyKv {
    pub(super) inner: Arc<dyn KeyValue>,
    pub(super) injector: Arc<FaultInjector>,
}

#[async_trait]
impl KeyValue for FaultyKv {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn get(&self, key: &str) -> TransportResult<Option<KvEntry>> {
        self.injector.check_connected()?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.put(key, value).await
    }
    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.delete(key).await
    }
    async fn keys(&self) -> TransportResult<Vec<String>> {
        self.injector.check_connected()?;
        self.inner.keys().await
    }
    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>> {
        self.injector.check_connected()?;
        self.inner.watch(pattern).await
    }
    async fn history(&self, key: &str) -> TransportResult<Vec<KvEntry>> {
        self.injector.check_connected()?;
        self.inner.history(key).await
    }
}

pub(super) struct FaultyObjects {
    pub(super) inner: Arc<dyn ObjectStore>,
    pub(super) injector: Arc<FaultInjector>,
}

#[async_trait]
impl ObjectStore for FaultyObjects {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(
        &self,
        name: &str,
        reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo> {
        self.injector.check_connected()?;
        self.inner.put(name, reader).await
    }
    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        self.injector.check_connected()?;
        self.inner.get(name).await
    }
    async fn info(&self, name: &str) -> TransportResult<ObjectInfo> {
        self.injector.check_connected()?;
        self.inner.info(name).await
    }
    async fn delete(&self, name: &str) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.delete(name).await
    }
    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        self.injector.check_connected()?;
        self.inner.list().await
    }
}
