//! The HTTP client: the backend's base URL, the bearer credential, JSON in
//! and out, and the API's `{error, details}` bodies turned into messages.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A client of one backend.
pub struct Api {
    pub base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Api {
    /// A client of `base`; `ca` (PEM) replaces the public roots for an
    /// `https://` backend whose certificate a private CA issued. A token is
    /// never sent over plain HTTP to another host.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if token.is_some() && base.starts_with("http://") && !is_loopback_url(&base) {
            return Err(format!(
                "refusing to send a bearer token over plain HTTP to {base}: serve the API with --tls-cert and use https://"
            ));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kanade-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(format!("--ca {}: no certificate in it", ca.display()));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Self {
            base,
            agent: config.build().into(),
            token,
        })
    }

    fn authorise<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    pub fn decode<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, String> {
        let mut response = response.map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            let body: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            let mut message = body["error"].as_str().unwrap_or(&text).to_owned();
            // A refused manifest: each problem once, with its line when
            // known and its field when it has one.
            if let Some(details) = body["details"].as_array().filter(|d| !d.is_empty()) {
                message = format!(
                    "the manifest was refused ({} problem{}):",
                    details.len(),
                    if details.len() == 1 { "" } else { "s" }
                );
                for detail in details {
                    let line = detail["line"]
                        .as_u64()
                        .map_or(String::new(), |l| format!("line {l}: "));
                    let field = detail["field"]
                        .as_str()
                        .filter(|f| !f.is_empty())
                        .map_or(String::new(), |f| format!("{f}: "));
                    message.push_str(&format!(
                        "\n  {line}{field}{}",
                        detail["message"].as_str().unwrap_or("")
                    ));
                }
            }
            if status == 401 && self.token.is_none() {
                message.push_str(
                    "\n  (no credential given: kanade login --token <token>, --token or KANADE_TOKEN)",
                );
            }
            return Err(format!("{status}: {message}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("unexpected answer: {e}"))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let request = self.authorise(self.agent.get(&format!("{}{path}", self.base)));
        self.decode(request.call())
    }

    /// A POST with a fresh `Idempotency-Key` (the audit trail records a
    /// retried request once).
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        let request = self.authorise(self.agent.post(&format!("{}{path}", self.base)));
        let key = uuid::Uuid::new_v4().to_string();
        self.decode(request.header("Idempotency-Key", &key).send_json(body))
    }

    /// A POST of raw bytes (`application/octet-stream`), with a fresh
    /// `Idempotency-Key`.
    pub fn post_bytes<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, String> {
        let request = self.authorise(self.agent.post(&format!("{}{path}", self.base)));
        let key = uuid::Uuid::new_v4().to_string();
        self.decode(
            request
                .header("Idempotency-Key", &key)
                .content_type("application/octet-stream")
                .send(body),
        )
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let request = self.authorise(self.agent.delete(&format!("{}{path}", self.base)));
        self.decode(request.call())
    }
}

/// Whether an `http://` URL names this machine.
fn is_loopback_url(url: &str) -> bool {
    let host = url
        .trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Ends the CLI quietly (status 141, as a shell reports SIGPIPE) when its
/// standard output is closed under it — `kanade inventory JOB | head` —
/// instead of printing a panic: Rust ignores SIGPIPE, so `println!`
/// panics on the broken pipe, and setting the signal back needs `unsafe`.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
