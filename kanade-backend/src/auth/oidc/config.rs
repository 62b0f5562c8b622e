//! The `[oidc]` config section ([`OidcConfig`]), where its JWKS comes from
//! ([`JwksSource`]) and the checks on both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use super::console::is_loopback_http;
use super::error::OidcError;
use crate::auth::principal::Role;

/// The asymmetric algorithms kanade can verify. HMAC (`HS*`) and `none`
/// are never accepted: a JWKS holds public keys.
const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The `[oidc]` section of the backend's config file.
///
/// ```toml
/// [oidc]
/// issuer = "https://login.example.com/realms/ops"
/// audience = "kanade"
/// jwks_url = "https://login.example.com/realms/ops/protocol/openid-connect/certs"
/// role_claim = "realm_access.roles"
/// scopes_claim = "kanade_scopes"
///
/// [oidc.role_map]
/// kanade-viewers = "viewer"
/// kanade-operators = "operator"
/// kanade-admins = "admin"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The expected `iss` claim, compared exactly.
    pub issuer: String,
    /// The expected `aud` claim (a token's `aud` may be a list containing it).
    pub audience: String,
    /// A JWKS file to load. Exactly one of this and `jwks_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL to fetch: `https://`, or `http://` to a loopback host
    /// only. Exactly one of this and `jwks_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The claim holding the caller's role names: a top-level claim name
    /// (tried first, so `https://example.com/roles` works) or a dotted path
    /// into nested objects (`realm_access.roles`). Its value is a string or
    /// an array of strings. Default `role`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Role claim value → kanade role. The highest role any value maps to
    /// wins; a token none of whose values is mapped is refused.
    pub role_map: BTreeMap<String, Role>,
    /// A claim (name or dotted path) holding an object `{jobs, tags,
    /// groups, pcs}` (each a list of strings) that narrows the caller as
    /// [`Scopes`](crate::auth::Scopes). Unset, or a token without the claim (or with `null`):
    /// no narrowing beyond the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_claim: Option<String>,
    /// The claim (name or dotted path) that names the caller; the principal
    /// is `oidc:<value>`. Default `sub`.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// The JWS algorithms accepted (`alg` header). Default `RS256`,
    /// `ES256`, `EdDSA`. Allowed: `RS256/384/512`, `PS256/384/512`,
    /// `ES256/384`, `EdDSA`; never `HS*` or `none`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// How the web console signs operators in at the issuer (absent: the
    /// console takes a pasted token only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<super::console::ConsoleSignIn>,
}

fn default_role_claim() -> String {
    "role".to_owned()
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_leeway_secs() -> u64 {
    30
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned(), "EdDSA".to_owned()]
}

/// Where the binary gets the issuer's JWKS from (see
/// [`OidcConfig::jwks_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksSource<'a> {
    /// Read this file.
    File(&'a Path),
    /// Fetch this URL.
    Url(&'a str),
}

impl OidcConfig {
    /// A config with the defaults for everything but the issuer, audience,
    /// JWKS source and role map.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        jwks: JwksSource<'_>,
        role_map: BTreeMap<String, Role>,
    ) -> Self {
        let (jwks_file, jwks_url) = match jwks {
            JwksSource::File(path) => (Some(path.to_path_buf()), None),
            JwksSource::Url(url) => (None, Some(url.to_owned())),
        };
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_file,
            jwks_url,
            role_claim: default_role_claim(),
            role_map,
            scopes_claim: None,
            subject_claim: default_subject_claim(),
            leeway_secs: default_leeway_secs(),
            algorithms: default_algorithms(),
            console: None,
        }
    }

    /// Where to load the JWKS from.
    ///
    /// # Errors
    /// [`OidcError::Config`] when neither or both of `jwks_file` and
    /// `jwks_url` are set, or the URL is neither `https://` nor `http://`
    /// to a loopback host.
    pub fn jwks_source(&self) -> Result<JwksSource<'_>, OidcError> {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(path), None) => Ok(JwksSource::File(path)),
            (None, Some(url)) => {
                if url.starts_with("https://") || is_loopback_http(url) {
                    Ok(JwksSource::Url(url))
                } else {
                    Err(OidcError::Config(format!(
                        "jwks_url {url:?} must be https:// (plain http:// only to localhost, 127.0.0.1 or [::1])"
                    )))
                }
            }
            (None, None) => Err(OidcError::Config(
                "set one of jwks_file and jwks_url".to_owned(),
            )),
            (Some(_), Some(_)) => Err(OidcError::Config(
                "set only one of jwks_file and jwks_url".to_owned(),
            )),
        }
    }

    /// Checks everything but the JWKS itself: issuer, audience, claims and
    /// role map set, the JWKS source, the algorithms.
    ///
    /// # Errors
    /// [`OidcError::Config`] naming the first problem.
    pub fn validate(&self) -> Result<(), OidcError> {
        self.parsed_algorithms().map(|_| ())
    }

    /// The configured algorithms, parsed and deduplicated, after the
    /// checks of [`OidcConfig::validate`].
    pub(super) fn parsed_algorithms(&self) -> Result<Vec<Algorithm>, OidcError> {
        let config = |msg: String| Err(OidcError::Config(msg));
        if self.issuer.trim().is_empty() {
            return config("issuer is empty".to_owned());
        }
        if self.audience.trim().is_empty() {
            return config("audience is empty".to_owned());
        }
        if self.role_claim.trim().is_empty() {
            return config("role_claim is empty".to_owned());
        }
        if self.subject_claim.trim().is_empty() {
            return config("subject_claim is empty".to_owned());
        }
        if self
            .scopes_claim
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return config("scopes_claim is empty (leave it out for no scopes)".to_owned());
        }
        if self.role_map.is_empty() {
            return config("role_map is empty: no token could ever get a role".to_owned());
        }
        self.jwks_source()?;
        if let Some(console) = &self.console {
            console.validate()?;
        }
        if self.algorithms.is_empty() {
            return config("algorithms is empty".to_owned());
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for name in &self.algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&name.as_str()) {
                return config(format!(
                    "algorithm {name:?} is not supported: use {}",
                    SUPPORTED_ALGORITHMS.join(", ")
                ));
            }
            let alg = Algorithm::from_str(name)
                .map_err(|_| OidcError::Config(format!("algorithm {name:?} is not supported")))?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        Ok(algorithms)
    }
}
