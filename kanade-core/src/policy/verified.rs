//! A memo of signatures that have already verified, so the same signed
//! command is checked with Ed25519 once: an agent sees each command twice
//! (its live copy and the replay of EXEC, DESIGN §6), and a simulated
//! fleet shares one memo across all its agents.
//!
//! An entry is the SHA-256 of (public key, signed bytes, signature): a hit
//! means exactly those bytes verified with exactly that key before, so
//! skipping the curve arithmetic changes no verdict. Time-dependent checks
//! (clock ahead, maximum age) are not memoised; [`super::signature`] runs
//! them on every call. Refusals are never stored.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Entries kept by [`VerifiedSignatures::default`]: more than the commands
/// an agent's ledger holds at once on a busy day.
pub const DEFAULT_CAPACITY: usize = 4096;

/// A bounded set of verified (key, message, signature) triples; the oldest
/// entry goes first when full. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct VerifiedSignatures {
    capacity: usize,
    inner: Mutex<Memo>,
}

#[derive(Debug, Default)]
struct Memo {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Default for VerifiedSignatures {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl VerifiedSignatures {
    /// A memo of at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Memo::default()),
        }
    }

    /// The memo key of `signature` over `message` by `public_key`.
    pub fn key_of(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(public_key);
        hasher.update((message.len() as u64).to_be_bytes());
        hasher.update(message);
        hasher.update(signature);
        hasher.finalize().into()
    }

    /// Whether `key` verified before.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.lock().set.contains(key)
    }

    /// Records that `key` verified.
    pub fn insert(&self, key: [u8; 32]) {
        let mut memo = self.lock();
        if !memo.set.insert(key) {
            return;
        }
        memo.order.push_back(key);
        while memo.order.len() > self.capacity {
            if let Some(oldest) = memo.order.pop_front() {
                memo.set.remove(&oldest);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_goes_first_when_full() {
        let memo = VerifiedSignatures::with_capacity(2);
        let keys: Vec<[u8; 32]> = (0u8..3)
            .map(|i| VerifiedSignatures::key_of(&[i; 32], b"m", &[0; 64]))
            .collect();
        for key in &keys {
            memo.insert(*key);
        }
        assert_eq!(memo.len(), 2);
        assert!(!memo.contains(&keys[0]));
        assert!(memo.contains(&keys[1]) && memo.contains(&keys[2]));
    }

    #[test]
    fn every_part_of_the_triple_is_in_the_key() {
        let base = VerifiedSignatures::key_of(&[1; 32], b"message", &[2; 64]);
        assert_ne!(
            base,
            VerifiedSignatures::key_of(&[9; 32], b"message", &[2; 64])
        );
        assert_ne!(
            base,
            VerifiedSignatures::key_of(&[1; 32], b"messagf", &[2; 64])
        );
        assert_ne!(
            base,
            VerifiedSignatures::key_of(&[1; 32], b"message", &[3; 64])
        );
    }
}
