//! One stream's stored messages and its retention limits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::consumer::ConsumerState;
use crate::transport::{Message, PublishAck, StreamConfig, StreamInfo, MESSAGE_ID_HEADER};

/// A stream shared by the log (which appends) and its consumers (which read).
pub(super) struct StreamShared {
    pub(super) state: Mutex<StreamState>,
    /// Woken on every append and every nak, so waiting consumers re-check.
    pub(super) changed: Notify,
}

pub(super) struct Stored {
    pub(super) message: Message,
    pub(super) at: Instant,
    size: u64,
}

pub(super) struct StreamState {
    pub(super) config: StreamConfig,
    pub(super) messages: BTreeMap<u64, Stored>,
    last_sequence: u64,
    bytes: u64,
    per_subject: HashMap<String, VecDeque<u64>>,
    dedup: HashMap<String, (u64, Instant)>,
    pub(super) consumers: HashMap<String, Arc<Mutex<ConsumerState>>>,
}

impl StreamShared {
    pub(super) fn new(config: StreamConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(StreamState {
                config,
                messages: BTreeMap::new(),
                last_sequence: 0,
                bytes: 0,
                per_subject: HashMap::new(),
                dedup: HashMap::new(),
                consumers: HashMap::new(),
            }),
            changed: Notify::new(),
        })
    }
}

impl StreamState {
    /// Stores a message (or recognises a duplicate) and applies the limits.
    pub(super) fn append(&mut self, message: Message, now: Instant) -> PublishAck {
        self.expire(now);
        let message_id = message.headers.get(MESSAGE_ID_HEADER).cloned();
        if let (Some(id), Some(_)) = (&message_id, self.config.duplicate_window) {
            if let Some((sequence, _)) = self.dedup.get(id) {
                return PublishAck {
                    stream: self.config.name.clone(),
                    sequence: *sequence,
                    duplicate: true,
                };
            }
        }
        self.last_sequence += 1;
        let sequence = self.last_sequence;
        let size = (message.subject.len() + message.payload.len()) as u64;
        self.per_subject
            .entry(message.subject.clone())
            .or_default()
            .push_back(sequence);
        let subject = message.subject.clone();
        self.messages.insert(
            sequence,
            Stored {
                message,
                at: now,
                size,
            },
        );
        self.bytes += size;
        if let (Some(id), Some(_)) = (message_id, self.config.duplicate_window) {
            self.dedup.insert(id, (sequence, now));
        }
        self.enforce_limits(&subject);
        PublishAck {
            stream: self.config.name.clone(),
            sequence,
            duplicate: false,
        }
    }

    fn enforce_limits(&mut self, subject: &str) {
        if let Some(max) = self.config.max_msgs_per_subject {
            let oldest: Vec<u64> = match self.per_subject.get(subject) {
                Some(seqs) if seqs.len() as u64 > max => seqs
                    .iter()
                    .take(seqs.len() - max as usize)
                    .copied()
                    .collect(),
                _ => Vec::new(),
            };
            for sequence in oldest {
                self.remove(sequence);
            }
        }
        if let Some(max_bytes) = self.config.max_bytes {
            while self.bytes > max_bytes {
                match self.messages.keys().next().copied() {
                    Some(oldest) => self.remove(oldest),
                    None => break,
                }
            }
        }
    }

    /// Drops messages past `max_age` and dedup ids past the window.
    pub(super) fn expire(&mut self, now: Instant) {
        if let Some(max_age) = self.config.max_age {
            let expired: Vec<u64> = self
                .messages
                .iter()
                .take_while(|(_, stored)| now.saturating_duration_since(stored.at) > max_age)
                .map(|(seq, _)| *seq)
                .collect();
            for sequence in expired {
                self.remove(sequence);
            }
        }
        if let Some(window) = self.config.duplicate_window {
            self.dedup
                .retain(|_, (_, at)| now.saturating_duration_since(*at) <= window);
        }
    }

    fn remove(&mut self, sequence: u64) {
        if let Some(stored) = self.messages.remove(&sequence) {
            self.bytes -= stored.size;
            if let Some(seqs) = self.per_subject.get_mut(&stored.message.subject) {
                seqs.retain(|s| *s != sequence);
                if seqs.is_empty() {
                    self.per_subject.remove(&stored.message.subject);
                }
            }
        }
    }

    pub(super) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Sequences of the newest message of each subject, ascending.
    pub(super) fn last_per_subject(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .per_subject
            .values()
            .filter_map(|seqs| seqs.back().copied())
            .collect();
        seqs.sort_unstable();
        seqs
    }

    pub(super) fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            messages: self.messages.len() as u64,
            bytes: self.bytes,
            first_sequence: self.messages.keys().next().copied().unwrap_or(0),
            last_sequence: self.last_sequence,
        }
    }
}
