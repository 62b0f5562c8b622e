//! [`OidcError`]: why a JWT or the OIDC setup was refused.

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
