//! The transport contract (everything in [`kanade_core::transport`]) and
//! [`open`]: a transport from its URL.
//!
//! | URL | transport |
//! |---|---|
//! | `memory` | in-process ([`memory::MemoryTransport`]) |
//! | `file:<dir>` | a directory shared by the processes of one host ([`file::FileTransport`]) |
//! | `nats://h:p[,nats://h2:p2]`, `tls://h:p` | NATS JetStream (feature `nats`) |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let transport = kanade::transport::open("memory").await.unwrap();
//! assert!(!transport.capabilities().cross_process);
//!
//! let err = kanade::transport::open("redis://cache:6379").await.err().unwrap();
//! assert!(err.to_string().contains("redis://cache:6379"));
//! assert!(err.to_string().contains("nats://host:port"));
//! # });
//! ```

use std::sync::Arc;

pub use kanade_core::transport::*;

use kanade_core::transport::url::OpenError;

/// Opens the transport a URL names: `memory`, `file:<dir>`,
/// `nats://host:port[,nats://host2:port]` or `tls://host:port`.
///
/// NATS URLs need the `nats` feature; they connect with default
/// `kanade::nats::NatsOptions` (use
/// `kanade::nats::open_with` to set credentials, TLS files or replicas) and
/// do not provision streams (`kanade::nats::provision::provision` does).
///
/// # Errors
/// [`OpenError`] naming the URL and listing the accepted forms for an
/// unknown or malformed URL, [`OpenError::NatsNotBuiltIn`] for a NATS URL
/// without the `nats` feature, [`OpenError::Transport`] when the directory
/// or the connection fails.
pub async fn open(url: &str) -> Result<Arc<dyn Transport>, OpenError> {
    #[cfg(feature = "nats")]
    {
        Ok(kanade_transport_nats::open(url).await?.transport)
    }
    #[cfg(not(feature = "nats"))]
    {
        url::open_local(&url::TransportUrl::parse(url)?)
    }
}
