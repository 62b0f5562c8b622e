//! [`FaultyTransport`]: the entry point, wrapping a whole transport and
//! handing out faulty message log, key-value and object store wrappers.

use std::sync::Arc;

use async_trait::async_trait;

use super::injector::FaultInjector;
use super::log::FaultyLog;
use super::plan::FaultPlan;
use super::store::{FaultyKv, FaultyObjects};
use crate::transport::{
    Capabilities, KeyValue, KvConfig, MessageLog, ObjectStore, ObjectStoreConfig, Transport,
    TransportResult,
};

/// A transport wrapped with fault injection.
#[derive(Clone)]
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    injector: Arc<FaultInjector>,
}

impl FaultyTransport {
    /// Wraps `inner` with faults from `plan`.
    pub fn new(inner: Arc<dyn Transport>, plan: FaultPlan) -> Self {
        Self {
            inner,
            injector: FaultInjector::new(plan),
        }
    }

    /// The injector: recorded events and the connection switch.
    pub fn injector(&self) -> Arc<FaultInjector> {
        self.injector.clone()
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        Arc::new(FaultyLog {
            inner: self.inner.messages(),
            injector: self.injector.clone(),
        })
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        self.injector.check_connected()?;
        Ok(Arc::new(FaultyKv {
            inner: self.inner.key_value(config).await?,
            injector: self.injector.clone(),
        }))
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        self.injector.check_connected()?;
        Ok(Arc::new(FaultyObjects {
            inner: self.inner.object_store(config).await?,
            injector: self.injector.clone(),
        }))
    }
}
