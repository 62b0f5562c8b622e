//! Stream retention shared by the memory and file transports: stored
//! messages by sequence, each subject's sequences in order, the total size,
//! and the limits that drop the oldest messages (keep-last-per-subject, max
//! bytes, max age).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// What retention needs to know about a stored message.
pub(crate) trait Retained {
    /// The message's subject.
    fn subject(&self) -> &str;
    /// Its size for the byte limit.
    fn size(&self) -> u64;
}

/// Stored messages and the bookkeeping the limits need.
#[derive(Debug)]
pub(crate) struct Retention<E> {
    pub(crate) entries: BTreeMap<u64, E>,
    per_subject: HashMap<String, VecDeque<u64>>,
    bytes: u64,
}

impl<E: Retained> Retention<E> {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            per_subject: HashMap::new(),
            bytes: 0,
        }
    }

    pub(crate) fn insert(&mut self, sequence: u64, entry: E) {
        self.bytes += entry.size();
        self.per_subject
            .entry(entry.subject().to_owned())
            .or_default()
            .push_back(sequence);
        self.entries.insert(sequence, entry);
    }

    pub(crate) fn remove(&mut self, sequence: u64) -> Option<E> {
        let entry = self.entries.remove(&sequence)?;
        self.bytes -= entry.size();
        if let Some(seqs) = self.per_subject.get_mut(entry.subject()) {
            seqs.retain(|s| *s != sequence);
            if seqs.is_empty() {
                self.per_subject.remove(entry.subject());
            }
        }
        Some(entry)
    }

    /// Applies the per-subject and byte limits after a message on `subject`
    /// was inserted; returns what was dropped.
    pub(crate) fn enforce(
        &mut self,
        subject: &str,
        max_per_subject: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Vec<E> {
        let mut dropped = Vec::new();
        if let Some(max) = max_per_subject {
            let excess: Vec<u64> = match self.per_subject.get(subject) {
                Some(seqs) if seqs.len() as u64 > max => seqs
                    .iter()
                    .take(seqs.len() - max as usize)
                    .copied()
                    .collect(),
                _ => Vec::new(),
            };
            dropped.extend(excess.into_iter().filter_map(|seq| self.remove(seq)));
        }
        if let Some(max_bytes) = max_bytes {
            while self.bytes > max_bytes {
                let Some(oldest) = self.entries.keys().next().copied() else {
                    break;
                };
                dropped.extend(self.remove(oldest));
            }
        }
        dropped
    }

    /// Drops messages from the oldest for as long as `expired` holds.
    pub(crate) fn expire_oldest(&mut self, expired: impl Fn(&E) -> bool) -> Vec<E> {
        let old: Vec<u64> = self
            .entries
            .iter()
            .take_while(|(_, entry)| expired(entry))
            .map(|(seq, _)| *seq)
            .collect();
        old.into_iter().filter_map(|seq| self.remove(seq)).collect()
    }

    /// Sequences of the newest message of each subject, ascending.
    pub(crate) fn last_per_subject(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .per_subject
            .values()
            .filter_map(|s| s.back().copied())
            .collect();
        seqs.sort_unstable();
        seqs
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sequence of the oldest stored message (0 when empty).
    pub(crate) fn first_sequence(&self) -> u64 {
        self.entries.keys().next().copied().unwrap_or(0)
    }
}
