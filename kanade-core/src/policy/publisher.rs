//! Publisher proofs (DESIGN §10): who published a result.
//!
//! NATS permissions see subjects, not payloads: a result travels on
//! `results.<request_id>` and names its pc only in the body, so a broker
//! permission cannot stop an agent from publishing a result in another
//! pc's name. The agent therefore signs what it publishes with the NATS
//! NKey it connects with (`kanade-backend nats-auth` gives each agent one),
//! and the backend, which knows each pc's public NKey, refuses a result
//! whose `pc_id` is not the signer's.
//!
//! The proof travels in two headers next to the body (the body is
//! unchanged, so reference backends simply ignore them):
//!
//! | header           | value                                               |
//! |------------------|-----------------------------------------------------|
//! | `Kanade-Pub-Sig` | standard padded base64 of the 64-byte Ed25519 signature |
//! | `Kanade-Pub-Key` | the signer's public NKey (`U…`), for diagnostics      |
//!
//! The signed bytes are `kanade-publisher-v1`, a NUL, the subject, a NUL,
//! then the exact body ([`signed_bytes`]): a proof cannot be moved to
//! another subject. [`verify`] is pure.
//!
//! ```
//! use kanade_core::policy::publisher::{verify, PublisherSigner};
//!
//! let signer = PublisherSigner::generate();
//! let headers = signer.sign("results.r-1", br#"{"pc_id":"pc-001"}"#);
//! assert!(verify(signer.public_key(), "results.r-1", br#"{"pc_id":"pc-001"}"#, &headers).is_ok());
//! assert!(verify(signer.public_key(), "results.r-1", br#"{"pc_id":"pc-002"}"#, &headers).is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::transport::Headers;

/// Header carrying the standard padded base64 of the 64-byte signature.
pub const HEADER_PUBLISHER_SIG: &str = "Kanade-Pub-Sig";
/// Header carrying the signer's public NKey (`U…`); informational, the
/// verifier uses the key it already holds for the claimed pc.
pub const HEADER_PUBLISHER_KEY: &str = "Kanade-Pub-Key";
/// Domain separation prefix of the signed bytes.
const DOMAIN: &[u8] = b"kanade-publisher-v1";

/// The bytes a publisher proof signs: the domain, NUL, `subject`, NUL, `body`.
pub fn signed_bytes(subject: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(DOMAIN.len() + subject.len() + body.len() + 2);
    bytes.extend_from_slice(DOMAIN);
    bytes.push(0);
    bytes.extend_from_slice(subject.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(body);
    bytes
}

/// Why a publisher proof was refused. The message names no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The message carries no `Kanade-Pub-Sig`.
    #[error("no publisher signature")]
    Absent,
    /// The header is not base64 of 64 bytes.
    #[error("malformed publisher signature")]
    Malformed,
    /// The claimed pc has no known identity.
    #[error("no identity is known for this pc")]
    UnknownPc,
    /// The signature does not verify under the claimed pc's key (another
    /// identity signed, or the subject or body changed).
    #[error("publisher signature does not match the pc's identity")]
    Mismatch,
    /// The expected key is not a valid public NKey.
    #[error("the pc's recorded identity is not a user public NKey")]
    BadIdentity,
}

/// Checks that `headers` prove `body` on `subject` was published by the
/// holder of `public_key` (a user public NKey, `U…`).
pub fn verify(
    public_key: &str,
    subject: &str,
    body: &[u8],
    headers: &Headers,
) -> Result<(), ProofError> {
    let encoded = headers
        .get(HEADER_PUBLISHER_SIG)
        .ok_or(ProofError::Absent)?;
    let signature = STANDARD
        .decode(encoded.trim())
        .map_err(|_| ProofError::Malformed)?;
    if signature.len() != 64 {
        return Err(ProofError::Malformed);
    }
    let key = nkeys::KeyPair::from_public_key(public_key).map_err(|_| ProofError::BadIdentity)?;
    if key.key_pair_type() != nkeys::KeyPairType::User {
        return Err(ProofError::BadIdentity);
    }
    key.verify(&signed_bytes(subject, body), &signature)
        .map_err(|_| ProofError::Mismatch)
}

/// Signs what an agent publishes with its NATS user NKey.
#[derive(Clone)]
pub struct PublisherSigner {
    pair: std::sync::Arc<nkeys::KeyPair>,
    public_key: String,
}

impl fmt::Debug for PublisherSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherSigner")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl PublisherSigner {
    /// A signer from a user NKey seed (`SU…`, what `--nats-nkey` reads).
    ///
    /// # Errors
    /// The seed does not decode, or is not a user seed; the message does
    /// not repeat the seed.
    pub fn from_seed(seed: &str) -> Result<Self, String> {
        let pair = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|_| "not a valid NKey seed".to_owned())?;
        if pair.key_pair_type() != nkeys::KeyPairType::User {
            return Err(format!(
                "a {:?} seed, not a user seed (SU…)",
                pair.key_pair_type()
            ));
        }
        let public_key = pair.public_key();
        Ok(Self {
            pair: std::sync::Arc::new(pair),
            public_key,
        })
    }

    /// A signer with a fresh random user key (tests, simulations).
    pub fn generate() -> Self {
        let pair = nkeys::KeyPair::new_user();
        let public_key = pair.public_key();
        Self {
            pair: std::sync::Arc::new(pair),
            public_key,
        }
    }

    /// The public NKey (`U…`) the backend must hold for this pc.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The proof headers for `body` published on `subject`.
    pub fn sign(&self, subject: &str, body: &[u8]) -> Headers {
        // Signing with a seed-backed user pair cannot fail.
        let signature = self
            .pair
            .sign(&signed_bytes(subject, body))
            .unwrap_or_default();
        Headers::from([
            (HEADER_PUBLISHER_SIG.to_owned(), STANDARD.encode(signature)),
            (HEADER_PUBLISHER_KEY.to_owned(), self.public_key.clone()),
        ])
    }
}

/// Which public NKey each pc publishes with: the JSON object
/// `{"<pc_id>": "U…", …}` that `kanade-backend nats-auth` writes to
/// `agent-identities.json` next to the seeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherIdentities {
    by_pc: BTreeMap<String, String>,
}

impl PublisherIdentities {
    /// Identities from `(pc, public key)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            by_pc: pairs.into_iter().collect(),
        }
    }

    /// Parses the JSON object form.
    ///
    /// # Errors
    /// Not a JSON object of strings, or a value that is not a user public
    /// NKey (the error names the pc).
    pub fn parse(json: &str) -> Result<Self, String> {
        let by_pc: BTreeMap<String, String> = serde_json::from_str(json)
            .map_err(|e| format!("not a {{pc: public key}} object: {e}"))?;
        for (pc, key) in &by_pc {
            let valid = nkeys::KeyPair::from_public_key(key)
                .is_ok_and(|k| k.key_pair_type() == nkeys::KeyPairType::User);
            if !valid {
                return Err(format!("{pc}: not a user public NKey (U…)"));
            }
        }
        Ok(Self { by_pc })
    }

    /// The JSON object form (pretty, sorted by pc).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.by_pc).unwrap_or_default()
    }

    /// The public key recorded for `pc`.
    pub fn key_for(&self, pc: &str) -> Option<&str> {
        self.by_pc.get(pc).map(String::as_str)
    }

    /// How many pcs are known.
    pub fn len(&self) -> usize {
        self.by_pc.len()
    }

    /// Whether no pc is known.
    pub fn is_empty(&self) -> bool {
        self.by_pc.is_empty()
    }

    /// Checks that `pc` published `body` on `subject` ([`verify`] with
    /// `pc`'s key).
    pub fn verify(
        &self,
        pc: &str,
        subject: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<(), ProofError> {
        let key = self.key_for(pc).ok_or(ProofError::UnknownPc)?;
        verify(key, subject, body, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn another_identity_cannot_speak_for_a_pc() {
        let pc1 = PublisherSigner::generate();
        let pc2 = PublisherSigner::generate();
        let ids = PublisherIdentities::new([
            ("pc-001".to_owned(), pc1.public_key().to_owned()),
            ("pc-002".to_owned(), pc2.public_key().to_owned()),
        ]);
        let body = br#"{"pc_id":"pc-001"}"#;
        let forged = pc2.sign("results.r", body);
        assert_eq!(
            ids.verify("pc-001", "results.r", body, &forged),
            Err(ProofError::Mismatch)
        );
        let genuine = pc1.sign("results.r", body);
        assert_eq!(ids.verify("pc-001", "results.r", body, &genuine), Ok(()));
        assert_eq!(
            ids.verify("pc-003", "results.r", body, &genuine),
            Err(ProofError::UnknownPc)
        );
        assert_eq!(
            ids.verify("pc-001", "results.r", body, &Headers::new()),
            Err(ProofError::Absent)
        );
        let mut garbled = genuine.clone();
        garbled.insert(HEADER_PUBLISHER_SIG.into(), "not base64!".into());
        assert_eq!(
            ids.verify("pc-001", "results.r", body, &garbled),
            Err(ProofError::Malformed)
        );
    }

    #[test]
    fn identities_round_trip_and_refuse_bad_keys() {
        let signer = PublisherSigner::generate();
        let ids = PublisherIdentities::new([("pc-001".to_owned(), signer.public_key().to_owned())]);
        assert_eq!(PublisherIdentities::parse(&ids.to_json()), Ok(ids));
        let err = PublisherIdentities::parse(r#"{"pc-9": "Ubogus"}"#).unwrap_err();
        assert!(err.starts_with("pc-9:"), "{err}");
        // An account key is not a user identity.
        let account = nkeys::KeyPair::new_account().public_key();
        assert!(PublisherIdentities::parse(&format!(r#"{{"pc-9": "{account}"}}"#)).is_err());
        assert!(PublisherIdentities::parse("[]").is_err());
    }

    #[test]
    fn seeds_other_than_user_seeds_are_refused_without_echoing_them() {
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let err = PublisherSigner::from_seed(&account).unwrap_err();
        assert!(!err.contains(&account));
        let err = PublisherSigner::from_seed("SUnotaseed").unwrap_err();
        assert!(!err.contains("SUnotaseed"));
        let user = nkeys::KeyPair::new_user();
        let signer = PublisherSigner::from_seed(&user.seed().unwrap()).unwrap();
        assert_eq!(signer.public_key(), user.public_key());
        assert!(!format!("{signer:?}").contains(&user.seed().unwrap()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A changed body byte or subject never verifies.
        #[test]
        fn any_change_breaks_the_proof(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            subject_suffix in "[a-z0-9]{1,8}",
        ) {
            let signer = PublisherSigner::generate();
            let headers = signer.sign("results.r", &body);
            prop_assert!(verify(signer.public_key(), "results.r", &body, &headers).is_ok());
            let mut changed = body.clone();
            let i = index.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(
                verify(signer.public_key(), "results.r", &changed, &headers),
                Err(ProofError::Mismatch)
            );
            let other_subject = format!("results.r{subject_suffix}");
            prop_assert_eq!(
                verify(signer.public_key(), &other_subject, &body, &headers),
                Err(ProofError::Mismatch)
            );
        }
    }
}
