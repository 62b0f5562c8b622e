//! Command signatures (DESIGN §6, §10): Ed25519 detached signatures carried
//! in message headers, wire-compatible with the reference.
//!
//! The backend signs the exact body bytes of a command, dated `at_ms`; the
//! agent verifies them against a key ring it reads from local config only.
//! The signed bytes are `at_ms` as 8 big-endian bytes (`i64`) followed by
//! the body ([`signed_bytes`]). The headers are:
//!
//! | header            | value                                           |
//! |-------------------|-------------------------------------------------|
//! | `Kanade-Sig`      | standard padded base64 of the 64-byte signature |
//! | `Kanade-Sig-Kid`  | the key id                                      |
//! | `Kanade-Sig-Alg`  | `ed25519`                                       |
//! | `Kanade-Sig-At`   | decimal milliseconds since the Unix epoch       |
//!
//! [`verify`] is pure: the clock is a parameter.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::transport::Headers;

pub use super::verified::VerifiedSignatures;

/// Header carrying the standard padded base64 of the 64-byte signature.
pub const HEADER_SIG: &str = "Kanade-Sig";
/// Header carrying the id of the key that signed.
pub const HEADER_KID: &str = "Kanade-Sig-Kid";
/// Header carrying the signature algorithm (always [`ALG_ED25519`]).
pub const HEADER_ALG: &str = "Kanade-Sig-Alg";
/// Header carrying the signing time, decimal milliseconds since the Unix epoch.
pub const HEADER_AT: &str = "Kanade-Sig-At";
/// The only accepted algorithm name.
pub const ALG_ED25519: &str = "ed25519";
/// Signatures dated further ahead than this are refused (clock skew allowance).
pub const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;
/// The ObsEvent kind of a verified command.
pub const OBS_SIGNATURE_OK: &str = "command_signature_ok";

/// One trusted key as written in a key ring file
/// (`/etc/kanade/command-keys.json`: a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RingEntry {
    /// The key id a signature names in `Kanade-Sig-Kid`.
    pub kid: String,
    /// Standard padded base64 of the 32 raw public key bytes.
    pub public_key: String,
    /// A human-readable note (who holds the key, what it is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Signatures older than this many seconds are refused as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

/// Why a key ring (or a signing key file) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The text is not the expected JSON.
    #[error("key ring is not valid JSON: {0}")]
    Json(String),
    /// A key id is empty or contains whitespace or control characters.
    #[error(
        "key id {kid:?} is invalid: it must be non-empty, without whitespace or control characters"
    )]
    InvalidKid {
        /// The offending key id.
        kid: String,
    },
    /// Two entries share a key id.
    #[error("key id {kid:?} appears more than once in the key ring")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// A key is not standard padded base64.
    #[error("key {kid:?}: not standard base64: {reason}")]
    BadBase64 {
        /// The key id.
        kid: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A key decodes to the wrong number of bytes.
    #[error("key {kid:?}: decodes to {len} bytes, expected 32")]
    WrongLength {
        /// The key id.
        kid: String,
        /// The decoded length.
        len: usize,
    },
    /// A public key is not a valid (or is a weak, small-order) Ed25519 point.
    #[error("key {kid:?}: not a valid Ed25519 public key: {reason}")]
    InvalidKey {
        /// The key id.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The system random source failed while generating a key.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// A parsed entry: the entry as written plus its decoded key.
#[derive(Debug, Clone)]
struct RingKey {
    entry: RingEntry,
    key: VerifyingKey,
}

/// The keys an agent trusts, parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<RingKey>,
    /// [`KeyRing::fingerprints`], computed once: clones of a ring share
    /// them (an agent serialises them into every heartbeat).
    fingerprints: Arc<[String]>,
}

fn check_kid(kid: &str) -> Result<(), RingError> {
    if kid.is_empty() || kid.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RingError::InvalidKid {
            kid: kid.to_string(),
        });
    }
    Ok(())
}

fn decode_32(kid: &str, text: &str) -> Result<[u8; 32], RingError> {
    let bytes = STANDARD
        .decode(text.as_bytes())
        .map_err(|e| RingError::BadBase64 {
            kid: kid.to_string(),
            reason: e.to_string(),
        })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| RingError::WrongLength {
        kid: kid.to_string(),
        len: bytes.len(),
    })
}

fn fingerprint(kid: &str, key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{kid}:{hex}")
}

impl KeyRing {
    /// Validates `entries`: every kid well-formed and unique, every key
    /// standard base64 of 32 bytes that is a valid, non-weak Ed25519 point.
    /// Errors name the kid.
    pub fn from_entries(entries: Vec<RingEntry>) -> Result<Self, RingError> {
        let mut seen = BTreeSet::new();
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            check_kid(&entry.kid)?;
            if !seen.insert(entry.kid.clone()) {
                return Err(RingError::DuplicateKid { kid: entry.kid });
            }
            let raw = decode_32(&entry.kid, &entry.public_key)?;
            let key = VerifyingKey::from_bytes(&raw).map_err(|e| RingError::InvalidKey {
                kid: entry.kid.clone(),
                reason: e.to_string(),
            })?;
            if key.is_weak() {
                return Err(RingError::InvalidKey {
                    kid: entry.kid,
                    reason: "small-order (weak) point".to_string(),
                });
            }
            keys.push(RingKey { entry, key });
        }
        let fingerprints = keys
            .iter()
            .map(|k| fingerprint(&k.entry.kid, &k.key))
            .collect();
        Ok(Self { keys, fingerprints })
    }

    /// Parses a key ring file: a JSON array of [`RingEntry`].
    pub fn from_json(text: &str) -> Result<Self, RingError> {
        let entries: Vec<RingEntry> =
            serde_json::from_str(text).map_err(|e| RingError::Json(e.to_string()))?;
        Self::from_entries(entries)
    }

    /// The entries, in ring order.
    pub fn entries(&self) -> Vec<RingEntry> {
        self.keys.iter().map(|k| k.entry.clone()).collect()
    }

    /// `true` when the ring trusts no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys the ring trusts.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The entry for `kid`, if trusted.
    pub fn get(&self, kid: &str) -> Option<&RingEntry> {
        self.keys
            .iter()
            .find(|k| k.entry.kid == kid)
            .map(|k| &k.entry)
    }

    /// "kid:first 16 hex of sha256(public key bytes)" per key, in ring order
    /// (what heartbeats report).
    pub fn fingerprints(&self) -> Vec<String> {
        self.fingerprints.to_vec()
    }

    /// [`KeyRing::fingerprints`] as computed when the ring was built,
    /// shared rather than copied: every clone of the ring hands out the
    /// same list (a process embedding thousands of agents with one ring
    /// keeps one copy in cache).
    pub fn shared_fingerprints(&self) -> &Arc<[String]> {
        &self.fingerprints
    }

    fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.entry.kid == kid)
    }
}

/// The on-disk form of a signing key.
#[derive(Serialize, Deserialize)]
struct SignerFile {
    kid: String,
    secret_key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    break_glass: bool,
}

/// A private signing key with its kid. The key file is JSON
/// `{"kid": "...", "secret_key": "<standard base64 of the 32-byte seed>"}`.
///
/// The secret is zeroized on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct CommandSigner {
    kid: String,
    key: SigningKey,
    break_glass: bool,
}

impl fmt::Debug for CommandSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSigner")
            .field("kid", &self.kid)
            .field(
                "fingerprint",
                &fingerprint(&self.kid, &self.key.verifying_key()),
            )
            .finish_non_exhaustive()
    }
}

impl CommandSigner {
    /// A new key from the system random source.
    pub fn generate(kid: impl Into<String>) -> Result<Self, RingError> {
        let kid = kid.into();
        check_kid(&kid)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| RingError::Random(e.to_string()))?;
        let signer = Self::from_seed(kid, seed);
        seed.fill(0);
        Ok(signer)
    }

    /// The key derived from a 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Self {
        Self {
            kid: kid.into(),
            key: SigningKey::from_bytes(&seed),
            break_glass: false,
        }
    }

    /// Parses a key file (see the type's documentation).
    pub fn from_file_text(text: &str) -> Result<Self, RingError> {
        let file: SignerFile =
            serde_json::from_str(text).map_err(|e| RingError::Json(e.to_string()))?;
        check_kid(&file.kid)?;
        let seed = decode_32(&file.kid, &file.secret_key)?;
        Ok(Self::from_seed(file.kid, seed).with_break_glass(file.break_glass))
    }

    /// The key file text (pretty JSON). It holds the secret: write it with
    /// owner-only permissions.
    pub fn to_file_text(&self) -> String {
        let file = SignerFile {
            kid: self.kid.clone(),
            secret_key: STANDARD.encode(self.key.to_bytes()),
            break_glass: self.break_glass,
        };
        // Serialising two strings cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// Marks (or unmarks) this as a break-glass key: one kept for
    /// emergencies, with a short `max_age` in the rings, whose every use
    /// the backend audits. Stored in the key file (`"break_glass": true`).
    pub fn with_break_glass(mut self, break_glass: bool) -> Self {
        self.break_glass = break_glass;
        self
    }

    /// Whether this is a break-glass key.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Standard padded base64 of the 32 raw public key bytes.
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// "kid:first 16 hex of sha256(public key bytes)", as
    /// [`KeyRing::fingerprints`] reports it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.kid, &self.key.verifying_key())
    }

    /// The ring entry that trusts this key.
    pub fn ring_entry(&self, label: Option<String>, max_age_secs: Option<u64>) -> RingEntry {
        RingEntry {
            kid: self.kid.clone(),
            public_key: self.public_key_base64(),
            label,
            max_age_secs,
        }
    }

    /// The four headers for `body` signed at `at_ms`, in the order
    /// [`HEADER_SIG`], [`HEADER_KID`], [`HEADER_ALG`], [`HEADER_AT`].
    pub fn sign(&self, body: &[u8], at_ms: i64) -> Vec<(String, String)> {
        let sig = self.key.sign(&signed_bytes(at_ms, body));
        vec![
            (HEADER_SIG.to_string(), STANDARD.encode(sig.to_bytes())),
            (HEADER_KID.to_string(), self.kid.clone()),
            (HEADER_ALG.to_string(), ALG_ED25519.to_string()),
            (HEADER_AT.to_string(), at_ms.to_string()),
        ]
    }
}

/// The signed bytes: `at_ms` as 8 big-endian bytes, then `body`.
pub fn signed_bytes(at_ms: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Why a command's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureRefusal {
    /// There is no `Kanade-Sig` header.
    #[error("the command is not signed")]
    Absent,
    /// The kid is not in the ring.
    #[error("signed by unknown key {kid:?}")]
    UnknownKey {
        /// The kid the headers named.
        kid: String,
    },
    /// Malformed headers (bad base64, wrong or missing alg, missing kid,
    /// malformed at) or a signature that does not verify.
    #[error("invalid signature: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
    },
    /// Older than the key's `max_age_secs`.
    #[error("signature is {age_secs}s old, over the key's max age of {max_age_secs}s")]
    Stale {
        /// Its age, whole seconds rounded up.
        age_secs: i64,
        /// The key's limit.
        max_age_secs: u64,
    },
    /// Dated more than [`MAX_CLOCK_AHEAD_MS`] after now.
    #[error("signature is dated {ahead_secs}s in the future")]
    ClockAhead {
        /// How far ahead, whole seconds rounded up.
        ahead_secs: i64,
    },
}

impl SignatureRefusal {
    /// The ObsEvent kind: `command_signature_absent`,
    /// `command_signature_unknown_key`, `command_signature_invalid`,
    /// `command_signature_stale` or `command_signature_clock_ahead`.
    pub fn obs_kind(&self) -> &'static str {
        match self {
            Self::Absent => "command_signature_absent",
            Self::UnknownKey { .. } => "command_signature_unknown_key",
            Self::Invalid { .. } => "command_signature_invalid",
            Self::Stale { .. } => "command_signature_stale",
            Self::ClockAhead { .. } => "command_signature_clock_ahead",
        }
    }
}

fn invalid(reason: impl Into<String>) -> SignatureRefusal {
    SignatureRefusal::Invalid {
        reason: reason.into(),
    }
}

/// Whole seconds in `ms`, rounded up, saturating.
fn ceil_secs(ms: i128) -> i64 {
    let secs = (ms + 999).div_euclid(1000);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Verifies `body` against the headers with `ring`, at `now_ms`. `Ok(kid)`
/// when verified. Pure.
///
/// Order: no `Kanade-Sig` → [`SignatureRefusal::Absent`]; malformed
/// headers or an algorithm other than `ed25519` → `Invalid`; a kid not in
/// the ring → `UnknownKey`; a signature that fails `verify_strict` →
/// `Invalid`; only then the date: more than [`MAX_CLOCK_AHEAD_MS`] ahead →
/// `ClockAhead`, older than the key's `max_age_secs` → `Stale`. The `at`
/// header must be the canonical decimal form of an `i64` (no sign `+`, no
/// leading zeros, no spaces), so every change of it is refused.
pub fn verify(
    ring: &KeyRing,
    headers: &Headers,
    body: &[u8],
    now_ms: i64,
) -> Result<String, SignatureRefusal> {
    verify_memoised(ring, headers, body, now_ms, None)
}

/// [`verify`], skipping the Ed25519 arithmetic for a (key, bytes,
/// signature) triple `memo` has seen verify (and recording new ones). The
/// verdict is the same as [`verify`]'s for every input.
pub fn verify_memoised(
    ring: &KeyRing,
    headers: &Headers,
    body: &[u8],
    now_ms: i64,
    memo: Option<&VerifiedSignatures>,
) -> Result<String, SignatureRefusal> {
    let sig_text = headers.get(HEADER_SIG).ok_or(SignatureRefusal::Absent)?;
    let sig_bytes = STANDARD
        .decode(sig_text.as_bytes())
        .map_err(|e| invalid(format!("{HEADER_SIG} is not standard base64: {e}")))?;
    let sig_bytes = <[u8; 64]>::try_from(sig_bytes.as_slice()).map_err(|_| {
        invalid(format!(
            "{HEADER_SIG} decodes to {} bytes, expected 64",
            sig_bytes.len()
        ))
    })?;
    match headers.get(HEADER_ALG) {
        Some(alg) if alg == ALG_ED25519 => {}
        Some(alg) => return Err(invalid(format!("unsupported algorithm {alg:?}"))),
        None => return Err(invalid(format!("{HEADER_ALG} header is missing"))),
    }
    let kid = headers
        .get(HEADER_KID)
        .ok_or_else(|| invalid(format!("{HEADER_KID} header is missing")))?;
    let at_text = headers
        .get(HEADER_AT)
        .ok_or_else(|| invalid(format!("{HEADER_AT} header is missing")))?;
    let at_ms = at_text
        .parse::<i64>()
        .ok()
        .filter(|at| at.to_string() == *at_text)
        .ok_or_else(|| {
            invalid(format!(
                "{HEADER_AT} {at_text:?} is not decimal milliseconds"
            ))
        })?;

    let ring_key = ring
        .find(kid)
        .ok_or_else(|| SignatureRefusal::UnknownKey { kid: kid.clone() })?;
    let signature = Signature::from_bytes(&sig_bytes);
    let message = signed_bytes(at_ms, body);
    let memo_key =
        memo.map(|_| VerifiedSignatures::key_of(ring_key.key.as_bytes(), &message, &sig_bytes));
    let known = matches!((memo, &memo_key), (Some(m), Some(k)) if m.contains(k));
    if !known {
        ring_key
            .key
            .verify_strict(&message, &signature)
            .map_err(|_| invalid(format!("signature does not verify with key {kid:?}")))?;
        if let (Some(memo), Some(key)) = (memo, memo_key) {
            memo.insert(key);
        }
    }

    let ahead_ms = i128::from(at_ms) - i128::from(now_ms);
    if ahead_ms > i128::from(MAX_CLOCK_AHEAD_MS) {
        return Err(SignatureRefusal::ClockAhead {
            ahead_secs: ceil_secs(ahead_ms),
        });
    }
    if let Some(max_age_secs) = ring_key.entry.max_age_secs {
        let age_ms = -ahead_ms;
        if age_ms > i128::from(max_age_secs) * 1000 {
            return Err(SignatureRefusal::Stale {
                age_secs: ceil_secs(age_ms),
                max_age_secs,
            });
        }
    }
    Ok(kid.clone())
}
