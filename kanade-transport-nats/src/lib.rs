//! # kanade-transport-nats
//!
//! The NATS JetStream implementation of the kanade transport contract
//! ([`kanade_core::transport`]), on `async-nats`:
//!
//! - message log ↔ core NATS publish / subscribe, JetStream streams and
//!   durable pull consumers;
//! - key-value ↔ JetStream KV; object store ↔ JetStream object store;
//! - [`provision`](provision::provision) creates every stream, bucket and
//!   store kanade uses, idempotently;
//! - [`NatsTransport::connection_state`] reports connected / disconnected,
//!   which agents use for strict staleness.
//!
//! Point it at a server or a cluster with [`NatsOptions`]; scale past one
//! machine with a NATS cluster and `replicas: 3`.
//!
//! ```no_run
//! use kanade_core::transport::Transport;
//! use kanade_transport_nats::{provision::provision, NatsOptions, NatsTransport};
//!
//! # async fn run() -> Result<(), kanade_core::transport::TransportError> {
//! let mut options = NatsOptions::new("nats://nats-1:4222");
//! options.servers.push("nats://nats-2:4222".into());
//! options.replicas = 3;
//! let transport = NatsTransport::connect(options).await?;
//! let report = provision(&transport).await?;
//! println!("created {:?}", report.created);
//! let caps = transport.capabilities();
//! assert!(caps.durable);
//! # Ok(())
//! # }
//! ```

mod connect;
mod error;
mod kv;
mod log;
mod object;
pub mod open;
pub mod provision;
#[cfg(feature = "test-server")]
pub mod test_cluster;
#[cfg(feature = "test-server")]
pub mod test_server;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanade_core::transport::{
    Capabilities, KeyValue, KvConfig, MessageLog, ObjectStore, ObjectStoreConfig, Transport,
    TransportError, TransportResult,
};
use tokio::sync::watch;

pub use connect::{reconnect_delay, Auth, ConnectionState, NatsOptions, TlsOptions};
pub use open::{open, open_with, OpenedTransport};

/// A kanade transport over NATS JetStream. Cheap to clone.
#[derive(Clone)]
pub struct NatsTransport {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    state: watch::Receiver<ConnectionState>,
    replicas: usize,
    request_timeout: Duration,
    /// Every stream's subject filters, as last listed from the server.
    routes: std::sync::Mutex<Option<StreamRoutes>>,
}

/// How long a listing of the server's streams (used to tell which publishes
/// a stream captures) is trusted before it is listed again.
pub const ROUTE_TTL: Duration = Duration::from_secs(2);

/// Streams and their subject filters.
#[derive(Debug, Clone)]
pub(crate) struct StreamRoutes {
    pub(crate) listed_at: std::time::Instant,
    pub(crate) streams: Vec<(String, Vec<String>)>,
}

impl StreamRoutes {
    /// The stream whose filters match `subject`.
    pub(crate) fn capturing(&self, subject: &str) -> Option<String> {
        self.streams
            .iter()
            .find(|(_, filters)| kanade_core::transport::subject::matches_any(filters, subject))
            .map(|(name, _)| name.clone())
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Option<StreamRoutes>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached routes, if still fresh.
    fn fresh_routes(&self) -> Option<StreamRoutes> {
        self.routes()
            .as_ref()
            .filter(|r| r.listed_at.elapsed() < ROUTE_TTL)
            .cloned()
    }

    fn forget_routes(&self) {
        *self.routes() = None;
    }

    fn max_payload(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        }
    }

    fn ensure_connected(&self) -> TransportResult<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(TransportError::Disconnected(format!(
                "NATS connection is {other:?}"
            ))),
        }
    }
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("replicas", &self.shared.replicas)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// Connects with `options`.
    pub async fn connect(options: NatsOptions) -> TransportResult<Self> {
        let (client, state) = connect::connect(&options).await?;
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                js,
                state,
                replicas: options.replicas.max(1),
                request_timeout: options.request_timeout,
                routes: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The underlying async-nats client, for anything kanade does not wrap.
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }

    /// A channel that always holds the current connection state.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn capabilities(&self) -> Capabilities {
        let info = self.shared.client.server_info();
        Capabilities {
            name: "nats",
            durable: info.jetstream,
            cross_process: true,
            max_payload_bytes: self.shared.max_payload(),
            dedup_window: info.jetstream.then(|| Duration::from_secs(24 * 3600)),
            kv_max_history: 64,
            kv_ttl: true,
            max_object_bytes: None,
            deterministic_time: false,
        }
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        Arc::new(log::NatsLog {
            shared: self.shared.clone(),
        })
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        Ok(Arc::new(kv::open(self.shared.clone(), config).await?))
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        Ok(Arc::new(
            object::open(self.shared.clone(), config.bucket).await?,
        ))
    }
}
