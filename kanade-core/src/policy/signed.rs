//! A signed document: JSON text with the `Kanade-Sig*` headers of DESIGN
//! §6 over it, for records the backend hands agents through the broker
//! that are not commands (agent-side schedules, the fleet freeze). An
//! agent checks one with the command-key ring it trusts from local config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::signature::{verify, CommandSigner, KeyRing, SignatureRefusal, HEADER_AT};
use crate::transport::Headers;

/// JSON `body` text and the signature headers over it (none: unsigned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDocument {
    /// The document, byte for byte as signed.
    pub body: String,
    /// `Kanade-Sig`, `-Kid`, `-Alg`, `-At`; empty when unsigned.
    #[serde(default)]
    pub signature: BTreeMap<String, String>,
}

impl SignedDocument {
    /// `body` signed by `signer` at `at_ms`, or unsigned without a signer.
    pub fn new(body: String, signer: Option<&CommandSigner>, at_ms: i64) -> Self {
        let signature = signer
            .map(|s| s.sign(body.as_bytes(), at_ms).into_iter().collect())
            .unwrap_or_default();
        Self { body, signature }
    }

    /// Whether it carries a signature at all.
    pub fn is_signed(&self) -> bool {
        !self.signature.is_empty()
    }

    /// Verifies the signature with `ring` as of its own date: a document
    /// does not go stale the way a command does (the schedule a key signed
    /// stays what it signed); the kid, the algorithm and the Ed25519
    /// signature over the date and the exact text are checked as for a
    /// command. Returns the signing kid.
    ///
    /// # Errors
    /// The [`SignatureRefusal`] of [`verify`].
    pub fn verify(&self, ring: &KeyRing) -> Result<String, SignatureRefusal> {
        let mut headers = Headers::new();
        for (name, value) in &self.signature {
            headers.insert(name.clone(), value.clone());
        }
        let at_ms = self
            .signature
            .get(HEADER_AT)
            .and_then(|at| at.parse::<i64>().ok())
            .unwrap_or(i64::MIN);
        verify(ring, &headers, self.body.as_bytes(), at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_verifies_until_a_byte_changes() {
        let signer = CommandSigner::from_seed("k1", [3; 32]);
        let ring = KeyRing::from_entries(vec![signer.ring_entry(None, Some(1))]).unwrap();
        let doc = SignedDocument::new("{\"a\":1}".into(), Some(&signer), 1_000);
        assert_eq!(doc.verify(&ring).unwrap(), "k1");
        let mut edited = doc.clone();
        edited.body = "{\"a\":2}".into();
        assert!(edited.verify(&ring).is_err());
        let unsigned = SignedDocument::new("{}".into(), None, 0);
        assert!(!unsigned.is_signed());
        assert_eq!(unsigned.verify(&ring), Err(SignatureRefusal::Absent));
    }
}
