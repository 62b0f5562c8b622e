//! Opening any transport from its URL, the NATS arm included: what the
//! binaries and the facade's `kanade::transport::open` call.

use std::sync::Arc;

use kanade_core::transport::url::{open_local, OpenError, TransportUrl};
use kanade_core::transport::Transport;

use crate::{NatsOptions, NatsTransport};

/// A transport opened from a URL.
pub struct OpenedTransport {
    /// The transport, whatever its kind.
    pub transport: Arc<dyn Transport>,
    /// The same transport as a [`NatsTransport`] when the URL named NATS
    /// (for [`provision`](crate::provision::provision) and
    /// [`NatsTransport::connection_state`]).
    pub nats: Option<NatsTransport>,
}

impl std::fmt::Debug for OpenedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedTransport")
            .field("nats", &self.nats.is_some())
            .finish_non_exhaustive()
    }
}

/// Opens the transport a URL names (`memory`, `file:<dir>`,
/// `nats://h:p[,nats://h2:p2]`, `tls://h:p`), with default NATS options.
///
/// # Errors
/// [`OpenError`] naming the URL: unknown form, malformed server, directory
/// or connection failure.
pub async fn open(url: &str) -> Result<OpenedTransport, OpenError> {
    open_with(url, |_| {}).await
}

/// Like [`open`], letting the caller adjust the [`NatsOptions`] (client
/// name, credentials, TLS, replicas, retry on first connect) before a NATS
/// URL is connected; `configure` is not called for other transports. The
/// servers are set from the URL first, so `configure` sees (and may extend)
/// them.
///
/// # Errors
/// As [`open`].
pub async fn open_with(
    url: &str,
    configure: impl FnOnce(&mut NatsOptions),
) -> Result<OpenedTransport, OpenError> {
    let parsed = TransportUrl::parse(url)?;
    let TransportUrl::Nats { servers } = &parsed else {
        return Ok(OpenedTransport {
            transport: open_local(&parsed)?,
            nats: None,
        });
    };
    let mut options = NatsOptions::new("");
    options.servers = servers.clone();
    configure(&mut options);
    let nats = NatsTransport::connect(options)
        .await
        .map_err(|source| OpenError::Transport {
            value: parsed.redacted(),
            source,
        })?;
    Ok(OpenedTransport {
        transport: Arc::new(nats.clone()),
        nats: Some(nats),
    })
}
