//! Parsing a JWKS entry into a key kanade can verify signatures with.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

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
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    kind: KeyKind,
    pub(super) key: DecodingKey,
}

impl VerifyKey {
    pub(super) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// Parses one JWK into a usable verification key, or says why not.
pub(super) fn parse_jwk(entry: &Value) -> Result<VerifyKey, String> {
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
