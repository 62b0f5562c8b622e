//! The in-process transport: cheap to clone (an `Arc` bump), and with all
//! timing on tokio time so it is fully deterministic under
//! `tokio::time::pause()` on a current-thread runtime. The default for
//! tests, simulations and single-process embedding.
//!
//! ```
//! use bytes::Bytes;
//! use kanade_core::transport::{memory::MemoryTransport, Headers, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let transport = MemoryTransport::new();
//! let log = transport.messages();
//! let mut sub = log.subscribe("heartbeat.*").await.unwrap();
//! log.publish("heartbeat.pc-1", Headers::new(), Bytes::from_static(b"{}")).await.unwrap();
//! assert_eq!(sub.next().await.unwrap().subject, "heartbeat.pc-1");
//! # });
//! ```

mod consumer;
mod cursor;
mod kv;
mod log;
mod object;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Capabilities, KeyValue, KvConfig, MessageLog, ObjectStore, ObjectStoreConfig, Transport,
    TransportError, TransportResult,
};

/// Largest history a memory KV key keeps (the NATS limit, for parity).
pub const MAX_KV_HISTORY: usize = 64;

/// Tunables of a [`MemoryTransport`].
#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// Largest message payload or KV value (default 1 MiB, as NATS).
    pub max_payload_bytes: usize,
    /// Wall-clock time reported for the transport's first use (object
    /// `modified` stamps advance from it on tokio time). Defaults to the Unix
    /// epoch so runs are reproducible; set `Utc::now()` for real stamps.
    pub start_time: DateTime<Utc>,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            start_time: DateTime::UNIX_EPOCH,
        }
    }
}

/// The in-process transport. Clones share the same state.
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

struct Inner {
    settings: MemorySettings,
    clock: Clock,
    log: Arc<log::MemoryLog>,
    kv: Mutex<HashMap<String, Arc<kv::MemoryKv>>>,
    objects: Mutex<HashMap<String, Arc<object::MemoryObjects>>>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A transport with default settings.
    pub fn new() -> Self {
        Self::with_settings(MemorySettings::default())
    }

    /// A transport with the given settings.
    pub fn with_settings(settings: MemorySettings) -> Self {
        let clock = Clock {
            start_time: settings.start_time,
            origin: Arc::new(OnceLock::new()),
        };
        Self {
            inner: Arc::new(Inner {
                log: Arc::new(log::MemoryLog::new(settings.max_payload_bytes)),
                settings,
                clock,
                kv: Mutex::new(HashMap::new()),
                objects: Mutex::new(HashMap::new()),
            }),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "memory",
            durable: false,
            cross_process: false,
            max_payload_bytes: self.inner.settings.max_payload_bytes,
            dedup_window: Some(Duration::from_secs(7 * 24 * 3600)),
            kv_max_history: MAX_KV_HISTORY,
            kv_ttl: true,
            max_object_bytes: None,
            deterministic_time: true,
        }
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        self.inner.log.clone()
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        if config.history == 0 || config.history > MAX_KV_HISTORY {
            return Err(TransportError::InvalidConfig(format!(
                "bucket {}: history must be 1..={MAX_KV_HISTORY}, got {}",
                config.bucket, config.history
            )));
        }
        let mut buckets = lock(&self.inner.kv);
        let bucket = buckets.entry(config.bucket.clone()).or_insert_with(|| {
            Arc::new(kv::MemoryKv::new(
                config,
                self.inner.settings.max_payload_bytes,
            ))
        });
        Ok(bucket.clone())
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        let mut stores = lock(&self.inner.objects);
        let clock = self.inner.clock.clone();
        let store = stores
            .entry(config.bucket.clone())
            .or_insert_with(|| Arc::new(object::MemoryObjects::new(config.bucket, clock)));
        Ok(store.clone())
    }
}

/// Maps tokio time to wall-clock stamps without reading the wall clock
/// after construction.
#[derive(Debug, Clone)]
struct Clock {
    start_time: DateTime<Utc>,
    /// Shared by every bucket, so all stamps use one origin.
    origin: Arc<OnceLock<tokio::time::Instant>>,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        let origin = *self.origin.get_or_init(tokio::time::Instant::now);
        let elapsed = tokio::time::Instant::now().saturating_duration_since(origin);
        self.start_time + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it
/// (every critical section leaves the state consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
