//! Connection options and the connection-state channel.

use std::path::PathBuf;
use std::time::Duration;

use kanade_core::transport::url::redact;
use kanade_core::transport::{TransportError, TransportResult};
use tokio::sync::watch;

/// How to authenticate to the server. Its `Debug` form hides the seed,
/// token and password.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (JWT + NKey seed), as issued by `nsc`.
    CredentialsFile(PathBuf),
    /// An NKey seed (`SU…`).
    NKey(String),
    /// A bearer token.
    Token(String),
    /// User name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::CredentialsFile(path) => f.debug_tuple("CredentialsFile").field(path).finish(),
            Auth::NKey(_) => f.write_str("NKey(***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"***")
                .finish(),
        }
    }
}

/// TLS settings (rustls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse to connect without TLS.
    pub required: bool,
    /// Extra root certificates (PEM) to trust.
    pub root_certificates: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// Everything needed to reach a NATS server or cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://…`); several for a cluster.
    pub servers: Vec<String>,
    /// Authentication.
    pub auth: Auth,
    /// TLS.
    pub tls: TlsOptions,
    /// Client name shown by the server (`nats server report connections`).
    pub name: Option<String>,
    /// Longest pause between reconnect attempts (backoff doubles up to it).
    pub max_reconnect_delay: Duration,
    /// Timeout of request/reply calls (JetStream API, acks).
    pub request_timeout: Duration,
    /// Keep trying when the first connection attempt fails.
    pub retry_on_initial_connect: bool,
    /// Replicas for streams, buckets and stores this client creates
    /// (1 on a single server; 3 on a typical cluster).
    pub replicas: usize,
    /// Prefix of this client's reply subjects (default `_INBOX`). A
    /// per-identity prefix (`_INBOX_<pc>`, what `kanade-backend
    /// nats-auth` grants each agent) keeps one client from subscribing
    /// to the replies another receives.
    pub inbox_prefix: Option<String>,
}

impl NatsOptions {
    /// Options for one server URL with defaults for the rest.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            servers: vec![server.into()],
            auth: Auth::None,
            tls: TlsOptions::default(),
            name: None,
            max_reconnect_delay: Duration::from_secs(8),
            request_timeout: Duration::from_secs(10),
            retry_on_initial_connect: false,
            replicas: 1,
            inbox_prefix: None,
        }
    }

    /// Reads `NATS_URL` (comma-separated URLs), falling back to
    /// `nats://127.0.0.1:4222`.
    pub fn from_env() -> Self {
        let urls = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let mut options = Self::new("");
        options.servers = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        options
    }
}

/// Whether the client currently has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Connected to a server.
    Connected,
    /// Not connected (reconnecting in the background).
    Disconnected,
}

/// The backoff before reconnect attempt `attempt` (1-based): 100 ms doubling,
/// capped at `max`.
pub fn reconnect_delay(attempt: usize, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16) as u32;
    Duration::from_millis(100u64.saturating_mul(1 << exponent)).min(max)
}

/// Connects, wiring connection events into a state channel.
pub(crate) async fn connect(
    options: &NatsOptions,
) -> TransportResult<(async_nats::Client, watch::Receiver<ConnectionState>)> {
    if options.servers.is_empty() {
        return Err(TransportError::InvalidConfig(
            "no NATS server URL given".into(),
        ));
    }
    let (state_tx, state_rx) = watch::channel(ConnectionState::Disconnected);
    let initial_state = state_tx.clone();
    let max_delay = options.max_reconnect_delay;
    let servers_text = redact(&options.servers.join(","));
    let retry_servers = servers_text.clone();
    let mut connect = async_nats::ConnectOptions::new()
        .request_timeout(Some(options.request_timeout))
        .reconnect_delay_callback(move |attempt| {
            let delay = reconnect_delay(attempt, max_delay);
            // Every step of the back-off is visible at the default level.
            tracing::warn!(
                servers = %retry_servers,
                attempt,
                "NATS not reachable; next try in {}",
                humantime::format_duration(delay)
            );
            delay
        })
        .event_callback(move |event| {
            let state_tx = state_tx.clone();
            let servers = servers_text.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(servers = %servers, "connected to NATS");
                        state_tx.send_replace(ConnectionState::Connected);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(servers = %servers, "lost the NATS connection; reconnecting");
                        state_tx.send_replace(ConnectionState::Disconnected);
                    }
                    async_nats::Event::Closed => {
                        state_tx.send_replace(ConnectionState::Disconnected);
                    }
                    async_nats::Event::ClientError(e) => {
                        tracing::warn!(servers = %servers, "NATS: {e}");
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(servers = %servers, "NATS server: {e}");
                    }
                    other => tracing::debug!("nats event: {other}"),
                }
            }
        });
    if let Some(name) = &options.name {
        connect = connect.name(name);
    }
    if let Some(prefix) = &options.inbox_prefix {
        connect = connect.custom_inbox_prefix(prefix);
    }
    if options.retry_on_initial_connect {
        connect = connect.retry_on_initial_connect();
    }
    connect = match &options.auth {
        Auth::None => connect,
        Auth::CredentialsFile(path) => connect.credentials_file(path).await.map_err(|e| {
            TransportError::InvalidConfig(format!("credentials file {}: {e}", path.display()))
        })?,
        Auth::NKey(seed) => connect.nkey(seed.clone()),
        Auth::Token(token) => connect.token(token.clone()),
        Auth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.clone())
        }
    };
    if options.tls.required {
        connect = connect.require_tls(true);
    }
    if let Some(roots) = &options.tls.root_certificates {
        connect = connect.add_root_certificates(roots.clone());
    }
    if let Some((cert, key)) = &options.tls.client_certificate {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = options
        .servers
        .iter()
        .map(|url| {
            url.parse().map_err(|e| {
                TransportError::InvalidConfig(format!("server URL {:?}: {e}", redact(url)))
            })
        })
        .collect::<TransportResult<_>>()?;
    let client = connect.connect(servers).await.map_err(|e| {
        TransportError::Disconnected(format!(
            "connecting to {}: {e}",
            redact(&options.servers.join(","))
        ))
    })?;
    if client.connection_state() == async_nats::connection::State::Connected {
        // The Connected event may not have been delivered yet.
        initial_state.send_replace(ConnectionState::Connected);
    }
    Ok((client, state_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let shown = format!(
            "{:?} {:?} {:?}",
            Auth::NKey("SUAsecretseed".into()),
            Auth::Token("t0ken".into()),
            Auth::UserPassword {
                user: "alice".into(),
                password: "hunter2".into()
            }
        );
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["SUAsecretseed", "t0ken", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(8);
        let delays: Vec<u128> = (1..=9)
            .map(|a| reconnect_delay(a, max).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 8000, 8000]);
        assert_eq!(reconnect_delay(10_000, max), max);
    }

    #[test]
    fn env_lists_several_servers() {
        let options = NatsOptions::new("nats://a:4222");
        assert_eq!(options.servers, ["nats://a:4222"]);
        assert_eq!(options.replicas, 1);
    }
}
