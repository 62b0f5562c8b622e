//! Transport URLs: the one string form binaries, config files and embedders
//! use to choose a transport (`memory`, `file:<dir>`, `nats://h:p[,…]`,
//! `tls://h:p`), parsed by a pure function, and [`open_local`] for the two
//! transports this crate holds.
//!
//! The NATS arm lives in `kanade-transport-nats` (`kanade_transport_nats::open`)
//! and, behind the `nats` feature, in the facade's `kanade::transport::open`;
//! [`open_local`] refuses a NATS URL with [`OpenError::NatsNotBuiltIn`].
//!
//! ```
//! use kanade_core::transport::url::TransportUrl;
//!
//! assert_eq!(TransportUrl::parse("memory").unwrap(), TransportUrl::Memory);
//! let nats = TransportUrl::parse("nats://n1:4222,nats://n2:4222").unwrap();
//! assert_eq!(nats.to_string(), "nats://n1:4222,nats://n2:4222");
//! let err = TransportUrl::parse("redis://x").unwrap_err();
//! assert!(err.to_string().contains("redis://x"));
//! assert!(err.to_string().contains("file:<dir>"));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::file::FileTransport;
use super::memory::MemoryTransport;
use super::{Transport, TransportError};

/// The forms [`TransportUrl::parse`] accepts, as error messages list them.
pub const ACCEPTED_FORMS: &str =
    "memory, file:<dir>, nats://host:port[,nats://host2:port…] or tls://host:port[,…]";

/// A parsed transport URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportUrl {
    /// `memory`: the in-process transport (one process, nothing on disk).
    Memory,
    /// `file:<dir>`: the file transport over a directory shared by the
    /// processes of one host.
    File(PathBuf),
    /// `nats://host:port` or `tls://host:port`, comma-separated for a
    /// cluster: the NATS JetStream transport. `tls://` requires TLS.
    Nats {
        /// Server URLs, in the order given.
        servers: Vec<String>,
    },
}

/// Why a transport URL could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL matches none of the accepted forms.
    #[error("unknown transport {value:?}: use {ACCEPTED_FORMS}")]
    Unrecognised {
        /// The URL as given.
        value: String,
    },
    /// The URL has an accepted scheme but a malformed rest.
    #[error("invalid transport {value:?}: {reason} (accepted: {ACCEPTED_FORMS})")]
    Invalid {
        /// The URL (or the part of it) at fault.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A NATS URL, but this build has no NATS transport.
    #[error(
        "transport {value:?} needs NATS, which this build does not include \
         (enable the `nats` feature of the `kanade` crate, or use memory or file:<dir>)"
    )]
    NatsNotBuiltIn {
        /// The URL as given.
        value: String,
    },
    /// The transport itself failed to open (directory, connection).
    #[error("opening transport {value:?}: {source}")]
    Transport {
        /// The URL as given.
        value: String,
        /// The failure.
        #[source]
        source: TransportError,
    },
}

impl TransportUrl {
    /// Parses a transport URL. Surrounding whitespace is ignored; each
    /// server of a NATS list must be `nats://` or `tls://` followed by a
    /// host (`[user@]host[:port]`).
    ///
    /// # Errors
    /// [`OpenError::Unrecognised`] for an unknown form,
    /// [`OpenError::Invalid`] for an empty directory or a malformed server.
    pub fn parse(value: &str) -> Result<Self, OpenError> {
        let trimmed = value.trim();
        if trimmed == "memory" {
            return Ok(TransportUrl::Memory);
        }
        if let Some(dir) = trimmed.strip_prefix("file:") {
            let dir = dir.strip_prefix("//").unwrap_or(dir);
            if dir.is_empty() {
                return Err(OpenError::Invalid {
                    value: value.to_owned(),
                    reason: "file: needs a directory, e.g. file:/var/lib/kanade/bus",
                });
            }
            return Ok(TransportUrl::File(PathBuf::from(dir)));
        }
        if trimmed.starts_with("nats://") || trimmed.starts_with("tls://") {
            let servers = trimmed
                .split(',')
                .map(|server| check_server(server.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(TransportUrl::Nats { servers });
        }
        Err(OpenError::Unrecognised {
            value: value.to_owned(),
        })
    }

    /// Whether this URL names the NATS transport.
    pub fn is_nats(&self) -> bool {
        matches!(self, TransportUrl::Nats { .. })
    }
}

fn check_server(server: &str) -> Result<String, OpenError> {
    let invalid = |reason| OpenError::Invalid {
        value: server.to_owned(),
        reason,
    };
    let rest = server
        .strip_prefix("nats://")
        .or_else(|| server.strip_prefix("tls://"))
        .ok_or_else(|| invalid("each server of a list must start with nats:// or tls://"))?;
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.trim_end_matches('/');
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(invalid("a NATS server needs a host"));
    }
    if host_port.contains(['/', ' ', '?', '#']) {
        return Err(invalid("a NATS server is host[:port], without a path"));
    }
    if let Some((_, port)) = host_port.rsplit_once(':') {
        if !host_port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(invalid("the port must be a number from 0 to 65535"));
        }
    }
    Ok(server.to_owned())
}

impl FromStr for TransportUrl {
    type Err = OpenError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        TransportUrl::parse(value)
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportUrl::Memory => f.write_str("memory"),
            TransportUrl::File(dir) => write!(f, "file:{}", dir.display()),
            TransportUrl::Nats { servers } => f.write_str(&servers.join(",")),
        }
    }
}

/// Opens a `memory` or `file:` transport. A fresh [`MemoryTransport`] each
/// call: two calls share nothing.
///
/// # Errors
/// [`OpenError::NatsNotBuiltIn`] for a NATS URL (open those with
/// `kanade_transport_nats::open`), [`OpenError::Transport`] when the file
/// transport's directory cannot be opened.
pub fn open_local(url: &TransportUrl) -> Result<Arc<dyn Transport>, OpenError> {
    match url {
        TransportUrl::Memory => Ok(Arc::new(MemoryTransport::new())),
        TransportUrl::File(dir) => FileTransport::open(dir)
            .map(|transport| Arc::new(transport) as Arc<dyn Transport>)
            .map_err(|source| OpenError::Transport {
                value: url.to_string(),
                source,
            }),
        TransportUrl::Nats { .. } => Err(OpenError::NatsNotBuiltIn {
            value: url.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms_parse() {
        assert_eq!(
            TransportUrl::parse(" memory ").unwrap(),
            TransportUrl::Memory
        );
        assert_eq!(
            TransportUrl::parse("file:/tmp/bus").unwrap(),
            TransportUrl::File("/tmp/bus".into())
        );
        assert_eq!(
            TransportUrl::parse("file:relative/dir").unwrap(),
            TransportUrl::File("relative/dir".into())
        );
        assert_eq!(
            TransportUrl::parse("nats://a:4222, tls://b:4223,nats://user:pw@c").unwrap(),
            TransportUrl::Nats {
                servers: vec![
                    "nats://a:4222".into(),
                    "tls://b:4223".into(),
                    "nats://user:pw@c".into()
                ]
            }
        );
        assert_eq!(
            TransportUrl::parse("nats://[::1]:4222")
                .unwrap()
                .to_string(),
            "nats://[::1]:4222"
        );
    }

    #[test]
    fn bad_forms_name_the_value_and_list_the_accepted_ones() {
        for bad in [
            "",
            "mem",
            "Memory",
            "redis://x:1",
            "http://a:4222",
            "file:",
            "nats://",
            "nats://:4222",
            "nats://a:port",
            "nats://a:99999",
            "nats://a:4222,redis://b",
            "nats://a:4222/path",
            "nats://a:4222,",
        ] {
            let message = TransportUrl::parse(bad).unwrap_err().to_string();
            assert!(message.contains(ACCEPTED_FORMS), "{bad:?}: {message}");
            assert!(message.contains('"'), "{bad:?} names the value: {message}");
        }
    }

    #[test]
    fn open_local_refuses_nats_with_a_hint() {
        let url = TransportUrl::parse("nats://a:4222").unwrap();
        let message = open_local(&url).err().expect("refused").to_string();
        assert!(message.contains("nats://a:4222"), "{message}");
        assert!(message.contains("`nats` feature"), "{message}");
    }
}
