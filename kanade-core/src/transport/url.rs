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
         (enable the `nats` feature of the `kanade` crate; this build accepts memory or file:<dir>; \
         all forms: {ACCEPTED_FORMS})"
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
            return parse_file(value, dir).map(TransportUrl::File);
        }
        if trimmed.starts_with("nats://") || trimmed.starts_with("tls://") {
            let servers = trimmed
                .split(',')
                .enumerate()
                .map(|(n, server)| check_server(server.trim(), n > 0))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(TransportUrl::Nats { servers });
        }
        Err(OpenError::Unrecognised {
            value: redact(value),
        })
    }

    /// The URL with credentials (`user:password@`, `token@`) replaced by
    /// `***@`: what errors and logs show.
    pub fn redacted(&self) -> String {
        redact(&self.to_string())
    }

    /// Whether this URL names the NATS transport.
    pub fn is_nats(&self) -> bool {
        matches!(self, TransportUrl::Nats { .. })
    }
}

/// `file:<dir>`, or `file:///<absolute dir>` as a URL; `file://host/…`
/// (a remote host) is refused.
fn parse_file(value: &str, rest: &str) -> Result<PathBuf, OpenError> {
    let invalid = |reason| OpenError::Invalid {
        value: redact(value),
        reason,
    };
    let dir = match rest.strip_prefix("//") {
        Some(absolute) if absolute.starts_with('/') => absolute,
        Some(_) => {
            return Err(invalid(
                "file:// takes an absolute path (file:///var/lib/kanade/bus) and no host",
            ))
        }
        None => rest,
    };
    if dir.is_empty() {
        return Err(invalid(
            "file: needs a directory, e.g. file:/var/lib/kanade/bus",
        ));
    }
    Ok(PathBuf::from(dir))
}

/// Checks one server of a NATS list: `nats://` or `tls://`, optional
/// credentials, a host (a name, IPv4, or bracketed IPv6) and an optional
/// numeric port, no path. Servers after the first may omit the scheme
/// (`nats://a:4222,b:4222`, as async-nats reads it): they get `nats://`.
/// A trailing `/` is dropped.
fn check_server(server: &str, later: bool) -> Result<String, OpenError> {
    let invalid = |reason| OpenError::Invalid {
        value: redact(server),
        reason,
    };
    let (scheme, rest) = if let Some(rest) = server.strip_prefix("nats://") {
        ("nats://", rest)
    } else if let Some(rest) = server.strip_prefix("tls://") {
        ("tls://", rest)
    } else if later && !server.is_empty() && !server.contains("://") {
        ("nats://", server)
    } else {
        return Err(invalid(
            "each server of a list must be nats://host:port or tls://host:port",
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host_port = match rest.rsplit_once('@') {
        Some((credentials, host_port)) if !credentials.is_empty() => host_port,
        Some(_) => return Err(invalid("empty credentials before @")),
        None => rest,
    };
    if host_port.contains(['/', ' ', '?', '#', '@']) {
        return Err(invalid("a NATS server is host[:port], without a path"));
    }
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("an IPv6 address needs its closing ]"))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("not an IPv6 address between [ and ]"));
        }
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return Err(invalid("only :port may follow an IPv6 address")),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(invalid(
                    "too many colons: write an IPv6 address in brackets, [::1]:4222",
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("a NATS server needs a host"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(invalid("the port must be a number from 0 to 65535"));
        }
    }
    Ok(format!("{scheme}{rest}"))
}

/// Replaces the credentials of every `scheme://credentials@host` in a
/// comma-separated URL list with `***`, for errors and logs (a password or
/// token in a URL must never reach either).
///
/// ```
/// use kanade_core::transport::url::redact;
/// assert_eq!(redact("nats://u:pw@h:4222,nats://h2"), "nats://***@h:4222,nats://h2");
/// ```
pub fn redact(text: &str) -> String {
    text.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}***{}", &part[..scheme_end + 3], &part[at..])
            }
            (None, Some(at)) => format!("***{}", &part[at..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
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
                value: url.redacted(),
                source,
            }),
        TransportUrl::Nats { .. } => Err(OpenError::NatsNotBuiltIn {
            value: url.redacted(),
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
            "file://host/dir",
            "nats://a:4222:5",
            "nats://::1",
            "nats://[::1",
            "nats://[::1]x",
            "nats://[zz]:1",
            "nats://@a:1",
            "nats://a:1,redis://b",
            "nats://a:1,http://b",
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
