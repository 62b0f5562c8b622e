//! [`OidcVerifier`]: checks a JWT against the issuer's keys and the
//! config, then maps its claims to a [`Principal`].

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::config::OidcConfig;
use super::error::OidcError;
use super::jwks::{parse_jwk, VerifyKey};
use crate::auth::principal::{CredentialKind, Principal, Role, Scopes};

/// What [`Principal::name`] of an OIDC caller starts with; the rest is its
/// subject claim (`oidc:alice@example.com`). Keeps OIDC subjects apart from
/// API token names in the audit trail.
pub const OIDC_NAME_PREFIX: &str = "oidc:";

/// The longest credential [`OidcVerifier::verify`] looks at; longer ones are
/// refused as malformed before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The longest subject accepted as a principal name.
const MAX_SUBJECT_LEN: usize = 256;

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
