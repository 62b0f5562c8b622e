//! Optional OIDC authentication (DESIGN §10): operators may present a JWT
//! from an issuer the admin configures instead of a kanade API token. The
//! token's signature is checked against the issuer's JWKS, then `iss`,
//! `aud`, `exp` / `nbf` (with leeway) and the algorithm; a claim maps to a
//! [`Role`] and another, optionally, to [`Scopes`].
//!
//! No network here: the binary reads [`OidcConfig`] from its config file,
//! loads the JWKS from [`OidcConfig::jwks_source`] (a file, or a URL it
//! fetches) and hands the JSON to [`OidcVerifier::new`]. To pick up a key
//! rotation it builds a new verifier from a fresh JWKS.
//!
//! Errors say what was wrong (expired, wrong audience, unknown key…) and
//! never repeat the token or its claim values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::principal::{CredentialKind, Principal, Role, Scopes};

/// What [`Principal::name`] of an OIDC caller starts with; the rest is its
/// subject claim (`oidc:alice@example.com`). Keeps OIDC subjects apart from
/// API token names in the audit trail.
pub const OIDC_NAME_PREFIX: &str = "oidc:";

/// The longest credential [`OidcVerifier::verify`] looks at; longer ones are
/// refused as malformed before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The longest subject accepted as a principal name.
const MAX_SUBJECT_LEN: usize = 256;

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
    /// [`Scopes`]. Unset, or a token without the claim (or with `null`):
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

    fn parsed_algorithms(&self) -> Result<Vec<Algorithm>, OidcError> {
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

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if authority.starts_with("[::1]") {
        "[::1]"
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Why a JWT or the OIDC setup was refused. Messages say what was wrong
/// and never repeat the token or its claim values (a key id only when it
/// is short and printable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The `[oidc]` config is unusable.
    #[error("invalid OIDC configuration: {0}")]
    Config(String),
    /// The JWKS is not JSON of the expected shape, or holds no key kanade
    /// can verify with.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// Not three base64url segments with a JSON header and payload.
    #[error("the bearer credential is not a well-formed JWT")]
    Malformed,
    /// The token's `alg` is not in the configured algorithms (`none` and
    /// `HS*` never are).
    #[error("the token is signed with {alg}, which is not allowed (allowed: {allowed})")]
    AlgorithmNotAllowed {
        /// The token's algorithm (`none`, `HS256`…, or `an unrecognised
        /// algorithm`).
        alg: String,
        /// The configured algorithms, comma separated.
        allowed: String,
    },
    /// No JWKS key matches the token's key id (or the token has none and
    /// the JWKS has several candidate keys).
    #[error("{}", unknown_key_message(.kid.as_deref()))]
    UnknownKey {
        /// The token's `kid`, when it has one.
        kid: Option<String>,
    },
    /// The JWKS key the token names is of another type than its `alg`
    /// (for instance an RSA key and `alg: EdDSA`).
    #[error("the issuer's key for this token cannot verify {alg} signatures")]
    KeyAlgorithmMismatch {
        /// The token's algorithm.
        alg: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("the token's signature does not verify against the issuer's key")]
    BadSignature,
    /// `exp` is further in the past than the leeway.
    #[error("the token has expired (exp is more than {leeway_secs}s in the past)")]
    Expired {
        /// The configured leeway.
        leeway_secs: u64,
    },
    /// `nbf` is further in the future than the leeway.
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another issuer than the configured {expected}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not contain the configured audience.
    #[error("the token is for another audience than the configured {expected}")]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
    /// A claim kanade needs is absent (`exp`, `iss`, `aud`, the subject
    /// claim, the role claim).
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    /// A claim has the wrong type or an unacceptable value.
    #[error("the token's {claim} claim is not {expected}")]
    InvalidClaim {
        /// The claim name (or dotted path).
        claim: String,
        /// What it should be.
        expected: &'static str,
    },
    /// None of the role claim's values is in `role_map`.
    #[error("no value of the token's {claim} claim maps to a kanade role (see role_map)")]
    NoRole {
        /// The role claim name (or dotted path).
        claim: String,
    },
    /// The JWT library refused the token for another reason.
    #[error("the token was refused: {0}")]
    Rejected(&'static str),
}

fn unknown_key_message(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!(
            "no key in the issuer's JWKS has the token's key id {kid}; if the issuer rotated its keys, reload the JWKS"
        ),
        None => "the token names no key id and the issuer's JWKS has several keys".to_owned(),
    }
}

/// Whether `token` is shaped like a JWT (three base64url segments joined by
/// dots, the first two non-empty). Cheap and without decoding: lets the
/// HTTP layer send JWTs to [`OidcVerifier::verify`] and everything else
/// (kanade API tokens, `kanade_<id>_<secret>`) to the token store.
pub fn looks_like_jwt(token: &str) -> bool {
    if token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

/// The kind of public key a JWKS entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable JWKS signing key.
#[derive(Debug, Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

impl VerifyKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// Checks OIDC JWTs against one issuer's JWKS and maps them to
/// [`Principal`]s. Build once per JWKS; cheap to share (`Arc`) or clone.
#[derive(Debug, Clone)]
pub struct OidcVerifier {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    keys: Vec<VerifyKey>,
}

impl OidcVerifier {
    /// Checks `config` and parses `jwks_json` (a JWK Set, `{"keys": […]}`).
    /// Keys kanade cannot verify with (encryption keys, `oct`, other
    /// curves, RSA under 2048 bits, malformed ones) are skipped; at least
    /// one must remain.
    ///
    /// # Errors
    /// [`OidcError::Config`] for a bad config ([`OidcConfig::validate`]),
    /// [`OidcError::Jwks`] for a bad or empty JWKS.
    pub fn new(config: OidcConfig, jwks_json: &str) -> Result<Self, OidcError> {
        let algorithms = config.parsed_algorithms()?;
        ensure_crypto_provider();
        let jwks: Value = serde_json::from_str(jwks_json)
            .map_err(|e| OidcError::Jwks(format!("not JSON: {e}")))?;
        let entries = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| OidcError::Jwks("no \"keys\" array".to_owned()))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_jwk(entry) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("key {i}: {why}")),
            }
        }
        if keys.is_empty() {
            let detail = if skipped.is_empty() {
                "the key list is empty".to_owned()
            } else {
                format!("none is usable ({})", skipped.join("; "))
            };
            return Err(OidcError::Jwks(format!(
                "no signing key kanade can verify with: {detail}"
            )));
        }
        if !keys
            .iter()
            .any(|k| algorithms.iter().any(|&alg| k.accepts(alg)))
        {
            return Err(OidcError::Jwks(format!(
                "no key fits the configured algorithms ({})",
                config.algorithms.join(", ")
            )));
        }
        Ok(OidcVerifier {
            config,
            algorithms,
            keys,
        })
    }

    /// The configuration this verifier checks against.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// How many usable keys the JWKS held.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks `token` (the bearer credential, without `Bearer `): its
    /// signature against the JWKS key named by its `kid` (the only key when
    /// it names none), an allowed `alg`, `iss`, `aud`, `exp` and `nbf` with
    /// the leeway; then maps the role and scope claims.
    ///
    /// # Errors
    /// An [`OidcError`] saying what was wrong; all of them mean 401.
    pub fn verify(&self, token: &str) -> Result<Principal, OidcError> {
        if !looks_like_jwt(token) {
            return Err(OidcError::Malformed);
        }
        let (alg_name, kid) = peek_header(token)?;
        let alg = Algorithm::from_str(&alg_name)
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| OidcError::AlgorithmNotAllowed {
                alg: printable_alg(&alg_name),
                allowed: self.config.algorithms.join(", "),
            })?;
        let key = self.select_key(kid.as_deref(), alg)?;

        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| self.map_jwt_error(e.kind(), alg))?
            .claims;

        let subject = self.subject(&claims)?;
        let role = self.role(&claims)?;
        let scopes = self.scopes(&claims)?;
        Ok(Principal {
            name: format!("{OIDC_NAME_PREFIX}{subject}"),
            role,
            scopes,
            kind: CredentialKind::Oidc,
        })
    }

    fn select_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyKey, OidcError> {
        let unknown = || OidcError::UnknownKey {
            kid: kid.map(printable_kid),
        };
        let mismatch = || OidcError::KeyAlgorithmMismatch {
            alg: format!("{alg:?}"),
        };
        let only_key = match self.keys.as_slice() {
            [only] => Some(only),
            _ => None,
        };
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    // A lone key without a kid serves any kid.
                    return match only_key {
                        Some(only) if only.kid.is_none() => {
                            if only.accepts(alg) {
                                Ok(only)
                            } else {
                                Err(mismatch())
                            }
                        }
                        _ => Err(unknown()),
                    };
                }
                named.find(|k| k.accepts(alg)).ok_or_else(mismatch)
            }
            None => {
                if let Some(only) = only_key {
                    return if only.accepts(alg) {
                        Ok(only)
                    } else {
                        Err(mismatch())
                    };
                }
                let mut fitting = self.keys.iter().filter(|k| k.accepts(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    (None, _) => Err(mismatch()),
                    (Some(_), Some(_)) => Err(unknown()),
                }
            }
        }
    }

    fn map_jwt_error(&self, kind: &ErrorKind, alg: Algorithm) -> OidcError {
        match kind {
            ErrorKind::InvalidSignature => OidcError::BadSignature,
            ErrorKind::ExpiredSignature => OidcError::Expired {
                leeway_secs: self.config.leeway_secs,
            },
            ErrorKind::ImmatureSignature => OidcError::NotYetValid,
            ErrorKind::InvalidIssuer => OidcError::WrongIssuer {
                expected: self.config.issuer.clone(),
            },
            ErrorKind::InvalidAudience => OidcError::WrongAudience {
                expected: self.config.audience.clone(),
            },
            ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(spec_claim(claim)),
            ErrorKind::InvalidClaimFormat(claim) => OidcError::InvalidClaim {
                claim: spec_claim(claim),
                expected: "of the type the JWT specification requires",
            },
            ErrorKind::InvalidAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => OidcError::AlgorithmNotAllowed {
                alg: format!("{alg:?}"),
                allowed: self.config.algorithms.join(", "),
            },
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => OidcError::KeyAlgorithmMismatch {
                alg: format!("{alg:?}"),
            },
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => OidcError::Malformed,
            ErrorKind::InvalidSubject => OidcError::Rejected("unexpected subject"),
            _ => OidcError::Rejected("the JWT library refused it"),
        }
    }

    fn subject(&self, claims: &Map<String, Value>) -> Result<String, OidcError> {
        let claim = &self.config.subject_claim;
        let value = lookup(claims, claim).ok_or_else(|| OidcError::MissingClaim(claim.clone()))?;
        let invalid = || OidcError::InvalidClaim {
            claim: claim.clone(),
            expected: "a non-empty string of at most 256 printable characters",
        };
        let subject = value.as_str().ok_or_else(invalid)?;
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT_LEN
            || subject.chars().any(char::is_control)
        {
            return Err(invalid());
        }
        Ok(subject.to_owned())
    }

    fn role(&self, claims: &Map<String, Value>) -> Result<Role, OidcError> {
        let claim = &self.config.role_claim;
        let value = lookup(claims, claim).ok_or_else(|| OidcError::MissingClaim(claim.clone()))?;
        let names: Vec<&str> = match value {
            Value::String(name) => vec![name.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => {
                return Err(OidcError::InvalidClaim {
                    claim: claim.clone(),
                    expected: "a string or an array of strings",
                })
            }
        };
        names
            .into_iter()
            .filter_map(|name| self.config.role_map.get(name).copied())
            .max()
            .ok_or_else(|| OidcError::NoRole {
                claim: claim.clone(),
            })
    }

    fn scopes(&self, claims: &Map<String, Value>) -> Result<Scopes, OidcError> {
        let Some(claim) = &self.config.scopes_claim else {
            return Ok(Scopes::default());
        };
        match lookup(claims, claim) {
            None | Some(Value::Null) => Ok(Scopes::default()),
            Some(value @ Value::Object(_)) => {
                serde_json::from_value(value.clone()).map_err(|_| OidcError::InvalidClaim {
                    claim: claim.clone(),
                    expected: "an object of string lists {jobs, tags, groups, pcs}",
                })
            }
            Some(_) => Err(OidcError::InvalidClaim {
                claim: claim.clone(),
                expected: "an object of string lists {jobs, tags, groups, pcs}",
            }),
        }
    }
}

/// Makes sure jsonwebtoken has a crypto provider: with only `rust_crypto`
/// enabled it picks that one itself, but if feature unification also
/// enables `aws_lc_rs` it picks none and would panic on first use.
fn ensure_crypto_provider() {
    if CryptoProvider::try_get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}

/// A claim by exact top-level name first, then as a dotted path.
fn lookup<'a>(claims: &'a Map<String, Value>, claim: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(claim) {
        return Some(value);
    }
    let mut parts = claim.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The header's `alg` and `kid`, without verifying anything.
fn peek_header(token: &str) -> Result<(String, Option<String>), OidcError> {
    let segment = token.split('.').next().ok_or(OidcError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| OidcError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(OidcError::Malformed)?
        .to_owned();
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(OidcError::Malformed),
    };
    Ok((alg, kid))
}

/// An `alg` name fit for an error message: a known JWA name, or a
/// placeholder (never arbitrary token text).
fn printable_alg(alg: &str) -> String {
    const KNOWN: &[&str] = &[
        "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448", "ES256K",
    ];
    if KNOWN.contains(&alg) {
        alg.to_owned()
    } else {
        "an unrecognised algorithm".to_owned()
    }
}

/// A `kid` fit for an error message: quoted when short and printable
/// ASCII, else a placeholder.
fn printable_kid(kid: &str) -> String {
    if !kid.is_empty() && kid.len() <= 64 && kid.bytes().all(|b| b.is_ascii_graphic()) {
        format!("{kid:?}")
    } else {
        "(unprintable)".to_owned()
    }
}

/// The registered claims jsonwebtoken names in its errors; anything else
/// is reported generically (its errors are not meant to carry token text,
/// but stay on the safe side).
fn spec_claim(claim: &str) -> String {
    match claim {
        "exp" | "nbf" | "iss" | "aud" | "sub" => claim.to_owned(),
        _ => "registered".to_owned(),
    }
}

/// Parses one JWK into a usable verification key, or says why not.
fn parse_jwk(entry: &Value) -> Result<VerifyKey, String> {
    let obj = entry.as_object().ok_or("not an object")?;
    let text = |name: &str| -> Result<&str, String> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no {name:?} string"))
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(text(name)?.trim_end_matches('='))
            .map_err(|_| format!("{name:?} is not base64url"))
    };
    if let Some(key_use) = obj.get("use") {
        if key_use.as_str() != Some("sig") {
            return Err("not a signing key (use is not \"sig\")".to_owned());
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("not a verification key (key_ops lacks \"verify\")".to_owned());
        }
    }
    let kid = match obj.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("\"kid\" is not a string".to_owned()),
    };
    let kty = text("kty")?;
    let (kind, key) = match kty {
        "RSA" => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            let significant = n.iter().skip_while(|&&b| b == 0).count();
            if significant < 256 {
                return Err("RSA key shorter than 2048 bits".to_owned());
            }
            if e.is_empty() {
                return Err("RSA exponent is empty".to_owned());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, len) = match text("crv")? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length".to_owned());
            }
            let key = DecodingKey::from_ec_components(text("x")?, text("y")?)
                .map_err(|_| "EC coordinates are not base64url".to_owned())?;
            (kind, key)
        }
        "OKP" => {
            let crv = text("crv")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported OKP curve {crv:?}"));
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("Ed25519 public key is not 32 bytes".to_owned());
            }
            (
                KeyKind::Ed25519,
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&x))
                    .map_err(|_| "bad Ed25519 key".to_owned())?,
            )
        }
        "oct" => return Err("symmetric (oct) keys are never accepted".to_owned()),
        other => return Err(format!("unsupported key type {other:?}")),
    };
    let alg = match obj.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            let alg = Algorithm::from_str(name)
                .ok()
                .filter(|alg| kind.fits(*alg))
                .ok_or_else(|| {
                    format!("its alg {name:?} is not a signature algorithm for a {kty} key")
                })?;
            Some(alg)
        }
        Some(_) => return Err("\"alg\" is not a string".to_owned()),
    };
    Ok(VerifyKey {
        kid,
        alg,
        kind,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://login.example.com/realms/ops";
    const AUDIENCE: &str = "kanade";

    /// An Ed25519 key pair: the PKCS#8 v1 DER of a random seed (a fixed
    /// 16-byte prefix + the 32-byte seed) and its public JWK.
    struct TestKey {
        encoding: EncodingKey,
        jwk: Value,
    }

    impl TestKey {
        fn generate(kid: Option<&str>) -> Self {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).unwrap();
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend_from_slice(&seed);
            let encoding = EncodingKey::from_ed_der(&der);
            let public =
                jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
            let mut jwk = serde_json::to_value(&public).unwrap();
            assert_eq!(jwk["kty"], "OKP");
            assert_eq!(jwk["crv"], "Ed25519");
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            jwk["use"] = json!("sig");
            TestKey { encoding, jwk }
        }

        fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }
    }

    fn jwks(keys: &[&TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    fn config() -> OidcConfig {
        let mut config = OidcConfig::new(
            ISSUER,
            AUDIENCE,
            JwksSource::File(Path::new("/etc/kanade/jwks.json")),
            BTreeMap::from([
                ("kanade-viewers".to_owned(), Role::Viewer),
                ("kanade-operators".to_owned(), Role::Operator),
                ("kanade-admins".to_owned(), Role::Admin),
            ]),
        );
        config.scopes_claim = Some("kanade_scopes".to_owned());
        config
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now(),
            "exp": now() + 300,
            "role": "kanade-operators",
            "kanade_scopes": { "groups": ["canary"], "tags": ["safe"] },
        })
    }

    fn setup() -> (TestKey, OidcVerifier) {
        let key = TestKey::generate(Some("k1"));
        let verifier = OidcVerifier::new(config(), &jwks(&[&key])).unwrap();
        (key, verifier)
    }

    /// A token with a hand-made header and payload and an arbitrary
    /// signature segment.
    fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn oidc_valid_token_maps_role_and_scopes() {
        let (key, verifier) = setup();
        let principal = verifier.verify(&key.sign(Some("k1"), &claims())).unwrap();
        assert_eq!(principal.name, "oidc:alice");
        assert_eq!(principal.role, Role::Operator);
        assert_eq!(principal.kind, CredentialKind::Oidc);
        assert_eq!(principal.scopes.groups, vec!["canary".to_owned()]);
        assert_eq!(principal.scopes.tags, vec!["safe".to_owned()]);
        assert!(principal.scopes.jobs.is_empty() && principal.scopes.pcs.is_empty());
    }

    #[test]
    fn oidc_audience_list_containing_ours_is_accepted() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["aud"] = json!(["account", AUDIENCE]);
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
            Role::Operator
        );
    }

    #[test]
    fn oidc_missing_scopes_claim_means_unrestricted() {
        let (key, verifier) = setup();
        let mut c = claims();
        c.as_object_mut().unwrap().remove("kanade_scopes");
        assert!(verifier
            .verify(&key.sign(Some("k1"), &c))
            .unwrap()
            .scopes
            .is_unrestricted());
        c["kanade_scopes"] = json!("groups=canary");
        assert!(matches!(
            verifier.verify(&key.sign(Some("k1"), &c)),
            Err(OidcError::InvalidClaim { .. })
        ));
    }

    #[test]
    fn oidc_wrong_audience_is_refused() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["aud"] = json!("someone-else");
        let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
        assert_eq!(
            err,
            OidcError::WrongAudience {
                expected: AUDIENCE.to_owned()
            }
        );
        assert!(err.to_string().contains("audience"), "{err}");
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
            OidcError::MissingClaim("aud".to_owned())
        );
    }

    #[test]
    fn oidc_wrong_issuer_is_refused() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["iss"] = json!("https://evil.example.com");
        let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
        assert_eq!(
            err,
            OidcError::WrongIssuer {
                expected: ISSUER.to_owned()
            }
        );
        assert!(!err.to_string().contains("evil"), "{err}");
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
            OidcError::MissingClaim("iss".to_owned())
        );
    }

    #[test]
    fn oidc_expired_beyond_leeway_is_refused() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
        assert_eq!(err, OidcError::Expired { leeway_secs: 30 });
        assert!(err.to_string().contains("expired"), "{err}");
        // Within the leeway: accepted.
        c["exp"] = json!(now() - 5);
        assert!(verifier.verify(&key.sign(Some("k1"), &c)).is_ok());
        // No exp at all: refused.
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
            OidcError::MissingClaim("exp".to_owned())
        );
    }

    #[test]
    fn oidc_not_yet_valid_is_refused() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["nbf"] = json!(now() + 600);
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
            OidcError::NotYetValid
        );
        c["nbf"] = json!(now() + 5);
        assert!(verifier.verify(&key.sign(Some("k1"), &c)).is_ok());
    }

    #[test]
    fn oidc_token_signed_by_another_key_is_refused() {
        let (_, verifier) = setup();
        let other = TestKey::generate(Some("k1"));
        let err = verifier
            .verify(&other.sign(Some("k1"), &claims()))
            .unwrap_err();
        assert_eq!(err, OidcError::BadSignature);
        // A tampered payload under a genuine signature, too.
        let (key, verifier) = setup();
        let token = key.sign(Some("k1"), &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["role"] = json!("kanade-admins");
        let payload = URL_SAFE_NO_PAD.encode(c.to_string());
        parts[1] = &payload;
        assert_eq!(
            verifier.verify(&parts.join(".")).unwrap_err(),
            OidcError::BadSignature
        );
    }

    #[test]
    fn oidc_unknown_kid_is_refused() {
        let (key, verifier) = setup();
        let err = verifier
            .verify(&key.sign(Some("k2"), &claims()))
            .unwrap_err();
        assert_eq!(
            err,
            OidcError::UnknownKey {
                kid: Some("\"k2\"".to_owned())
            }
        );
        assert!(err.to_string().contains("rotated"), "{err}");
    }

    #[test]
    fn oidc_kid_selects_among_several_keys() {
        let k1 = TestKey::generate(Some("k1"));
        let k2 = TestKey::generate(Some("k2"));
        let verifier = OidcVerifier::new(config(), &jwks(&[&k1, &k2])).unwrap();
        assert_eq!(verifier.key_count(), 2);
        assert!(verifier.verify(&k1.sign(Some("k1"), &claims())).is_ok());
        assert!(verifier.verify(&k2.sign(Some("k2"), &claims())).is_ok());
        // k2's token claiming to be k1's: bad signature.
        assert_eq!(
            verifier
                .verify(&k2.sign(Some("k1"), &claims()))
                .unwrap_err(),
            OidcError::BadSignature
        );
        // No kid with several keys: ambiguous.
        assert_eq!(
            verifier.verify(&k1.sign(None, &claims())).unwrap_err(),
            OidcError::UnknownKey { kid: None }
        );
    }

    #[test]
    fn oidc_no_kid_with_a_single_key_uses_it() {
        let key = TestKey::generate(None);
        let verifier = OidcVerifier::new(config(), &jwks(&[&key])).unwrap();
        assert!(verifier.verify(&key.sign(None, &claims())).is_ok());
        let (key, verifier) = setup();
        assert!(verifier.verify(&key.sign(None, &claims())).is_ok());
    }

    #[test]
    fn oidc_unmapped_role_is_refused() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["role"] = json!("kanade-superusers");
        let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
        assert_eq!(
            err,
            OidcError::NoRole {
                claim: "role".to_owned()
            }
        );
        assert!(!err.to_string().contains("superusers"), "{err}");
        c["role"] = json!(["offline_access", "uma_authorization"]);
        assert!(matches!(
            verifier.verify(&key.sign(Some("k1"), &c)),
            Err(OidcError::NoRole { .. })
        ));
        c.as_object_mut().unwrap().remove("role");
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
            OidcError::MissingClaim("role".to_owned())
        );
        c["role"] = json!(3);
        assert!(matches!(
            verifier.verify(&key.sign(Some("k1"), &c)),
            Err(OidcError::InvalidClaim { .. })
        ));
    }

    #[test]
    fn oidc_array_role_claim_picks_the_highest_role() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["role"] = json!([
            "kanade-viewers",
            "offline_access",
            "kanade-admins",
            "kanade-operators"
        ]);
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn oidc_dotted_role_claim_reads_nested_objects() {
        let key = TestKey::generate(Some("k1"));
        let mut config = config();
        config.role_claim = "realm_access.roles".to_owned();
        config.subject_claim = "preferred_username".to_owned();
        let verifier = OidcVerifier::new(config, &jwks(&[&key])).unwrap();
        let mut c = claims();
        c["realm_access"] = json!({ "roles": ["kanade-viewers"] });
        c["preferred_username"] = json!("bob");
        let principal = verifier.verify(&key.sign(Some("k1"), &c)).unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("oidc:bob", Role::Viewer)
        );

        // A namespaced top-level claim with dots in its name wins over the path.
        let mut config = self::config();
        config.role_claim = "https://kanade.example.com/roles".to_owned();
        let verifier = OidcVerifier::new(config, &jwks(&[&key])).unwrap();
        let mut c = claims();
        c["https://kanade.example.com/roles"] = json!(["kanade-admins"]);
        assert_eq!(
            verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn oidc_alg_none_and_hs256_are_refused() {
        let (key, verifier) = setup();
        let none = forged(&json!({ "alg": "none", "typ": "JWT" }), &claims(), b"");
        let err = verifier.verify(&none).unwrap_err();
        assert!(
            matches!(
                err,
                OidcError::Malformed | OidcError::AlgorithmNotAllowed { .. }
            ),
            "{err}"
        );
        let none_sig = forged(&json!({ "alg": "none", "kid": "k1" }), &claims(), b"x");
        let err = verifier.verify(&none_sig).unwrap_err();
        assert!(
            matches!(&err, OidcError::AlgorithmNotAllowed { alg, .. } if alg == "none"),
            "{err}"
        );

        // HS256 with the issuer's public key as the HMAC secret (the
        // classic key-confusion forgery).
        let public = URL_SAFE_NO_PAD
            .decode(key.jwk["x"].as_str().unwrap())
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".to_owned());
        let hs = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&public).unwrap(),
        )
        .unwrap();
        let err = verifier.verify(&hs).unwrap_err();
        assert!(
            matches!(&err, OidcError::AlgorithmNotAllowed { alg, .. } if alg == "HS256"),
            "{err}"
        );

        // And HS256 can't be configured in.
        let mut config = config();
        config.algorithms = vec!["HS256".to_owned()];
        assert!(matches!(
            OidcVerifier::new(config, &jwks(&[&key])),
            Err(OidcError::Config(_))
        ));
    }

    #[test]
    fn oidc_algorithm_not_configured_is_refused() {
        let key = TestKey::generate(Some("k1"));
        let mut config = config();
        config.algorithms = vec!["RS256".to_owned(), "EdDSA".to_owned()];
        let verifier = OidcVerifier::new(config.clone(), &jwks(&[&key])).unwrap();
        assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
        config.algorithms = vec!["RS256".to_owned()];
        // The JWKS has only an Ed25519 key: nothing could verify.
        assert!(matches!(
            OidcVerifier::new(config, &jwks(&[&key])),
            Err(OidcError::Jwks(_))
        ));
    }

    #[test]
    fn oidc_errors_never_echo_the_token() {
        let (key, verifier) = setup();
        let mut c = claims();
        c["sub"] = json!("secret-subject-xyz");
        c["aud"] = json!("secret-audience-xyz");
        let token = key.sign(Some("k1"), &c);
        let err = verifier.verify(&token).unwrap_err().to_string();
        for part in token.split('.') {
            assert!(!err.contains(part), "{err}");
        }
        assert!(!err.contains("xyz"), "{err}");
        let garbage = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4eXoifQ.c2ln-junk";
        let err = verifier.verify(garbage).unwrap_err().to_string();
        assert!(!err.contains("xyz") && !err.contains("junk"), "{err}");
    }

    #[test]
    fn oidc_malformed_tokens_are_refused() {
        let (_, verifier) = setup();
        for token in [
            "",
            "kanade_abc_def",
            "a.b",
            "a.b.c.d",
            "!!.??.##",
            "e30.e30.",
            "bm90anNvbg.e30.c2ln",
        ] {
            assert!(
                matches!(verifier.verify(token), Err(OidcError::Malformed)),
                "{token:?}"
            );
        }
        let huge = format!("{}.e30.e30", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(verifier.verify(&huge).unwrap_err(), OidcError::Malformed);
    }

    #[test]
    fn oidc_looks_like_jwt_tells_jwts_from_api_tokens() {
        let (key, _) = setup();
        assert!(looks_like_jwt(&key.sign(Some("k1"), &claims())));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.e30."));
        assert!(!looks_like_jwt("kanade_0123abcd_c2VjcmV0LXNlY3JldA"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a+b.c/d.e=="));
        assert!(!looks_like_jwt(""));
    }

    #[test]
    fn oidc_config_defaults_and_checks() {
        let parsed: OidcConfig = serde_json::from_value(json!({
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://login.example.com/certs",
            "role_map": { "kanade-admins": "admin" },
        }))
        .unwrap();
        assert_eq!(parsed.role_claim, "role");
        assert_eq!(parsed.subject_claim, "sub");
        assert_eq!(parsed.leeway_secs, 30);
        assert_eq!(parsed.algorithms, vec!["RS256", "ES256", "EdDSA"]);
        assert_eq!(parsed.scopes_claim, None);
        assert_eq!(
            parsed.jwks_source().unwrap(),
            JwksSource::Url("https://login.example.com/certs")
        );
        parsed.validate().unwrap();
        let round: OidcConfig =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(round, parsed);

        let bad_role = serde_json::from_value::<OidcConfig>(json!({
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/x", "role_map": { "g": "root" },
        }));
        assert!(bad_role.is_err());
        let typo = serde_json::from_value::<OidcConfig>(json!({
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/x", "role_map": {}, "audiance": "x",
        }));
        assert!(typo.is_err());

        let mut both = parsed.clone();
        both.jwks_file = Some(PathBuf::from("/etc/jwks.json"));
        assert!(matches!(both.validate(), Err(OidcError::Config(_))));
        let mut neither = parsed.clone();
        neither.jwks_url = None;
        assert!(matches!(neither.validate(), Err(OidcError::Config(_))));
        let mut plain = parsed.clone();
        plain.jwks_url = Some("http://login.example.com/certs".to_owned());
        assert!(matches!(plain.validate(), Err(OidcError::Config(_))));
        plain.jwks_url = Some("http://127.0.0.1:8080/certs".to_owned());
        plain.validate().unwrap();
        plain.jwks_url = Some("http://localhost.evil.com/certs".to_owned());
        assert!(plain.validate().is_err());
        let mut empty_map = parsed.clone();
        empty_map.role_map.clear();
        assert!(matches!(empty_map.validate(), Err(OidcError::Config(_))));
        let mut no_alg = parsed;
        no_alg.algorithms = vec!["none".to_owned()];
        assert!(matches!(no_alg.validate(), Err(OidcError::Config(_))));
    }

    #[test]
    fn oidc_jwks_problems_are_reported_not_panicked_on() {
        let cfg = config;
        assert!(matches!(
            OidcVerifier::new(cfg(), "not json"),
            Err(OidcError::Jwks(_))
        ));
        assert!(matches!(
            OidcVerifier::new(cfg(), "{}"),
            Err(OidcError::Jwks(_))
        ));
        assert!(matches!(
            OidcVerifier::new(cfg(), r#"{"keys":[]}"#),
            Err(OidcError::Jwks(_))
        ));
        // A short Ed25519 key, an oct key, an encryption key, a small RSA key.
        let bad = json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short" },
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "RSA", "use": "enc", "n": URL_SAFE_NO_PAD.encode([1u8; 256]), "e": "AQAB" },
            { "kty": "RSA", "n": URL_SAFE_NO_PAD.encode([1u8; 128]), "e": "AQAB" },
            { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" },
        ]});
        let err = OidcVerifier::new(cfg(), &bad.to_string()).unwrap_err();
        assert!(err.to_string().contains("oct"), "{err}");
        // Unusable keys are skipped next to a good one.
        let key = TestKey::generate(Some("k1"));
        let mut mixed = bad;
        mixed["keys"].as_array_mut().unwrap().push(key.jwk.clone());
        let verifier = OidcVerifier::new(cfg(), &mixed.to_string()).unwrap();
        assert_eq!(verifier.key_count(), 1);
        assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
    }

    #[test]
    fn oidc_key_pinned_to_another_alg_or_type_is_refused() {
        let key = TestKey::generate(Some("k1"));
        let mut jwk = key.jwk.clone();
        jwk["alg"] = json!("RS256");
        let set = json!({ "keys": [jwk] }).to_string();
        // An OKP key pinned to RS256 is unusable.
        assert!(matches!(
            OidcVerifier::new(config(), &set),
            Err(OidcError::Jwks(_))
        ));

        // An RSA-looking kid used with EdDSA: the kid's key is the wrong type.
        let rsa = json!({ "kty": "RSA", "kid": "rsa", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB" });
        let set = json!({ "keys": [rsa, key.jwk.clone()] }).to_string();
        let verifier = OidcVerifier::new(config(), &set).unwrap();
        assert_eq!(
            verifier
                .verify(&key.sign(Some("rsa"), &claims()))
                .unwrap_err(),
            OidcError::KeyAlgorithmMismatch {
                alg: "EdDSA".to_owned()
            }
        );
        assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
    }
}
