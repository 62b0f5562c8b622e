//! One stream's stored messages and its retention limits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::cursor::ConsumerState;
use crate::transport::retention::{Retained, Retention};
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

impl Retained for Stored {
    fn subject(&self) -> &str {
        &self.message.subject
    }

    fn size(&self) -> u64 {
        self.size
    }
}

pub(super) struct StreamState {
    pub(super) config: StreamConfig,
    pub(super) retained: Retention<Stored>,
    last_sequence: u64,
    dedup: HashMap<String, (u64, Instant)>,
    /// Dedup ids in arrival order, so expiry pops from the front instead of
    /// scanning the whole window on every publish.
    dedup_order: VecDeque<(Instant, String)>,
    pub(super) consumers: HashMap<String, Arc<Mutex<ConsumerState>>>,
}

impl StreamShared {
    pub(super) fn new(config: StreamConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(StreamState {
                config,
                retained: Retention::new(),
                last_sequence: 0,
                dedup: HashMap::new(),
                dedup_order: VecDeque::new(),
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
        let subject = message.subject.clone();
        self.retained.insert(
            sequence,
            Stored {
                message,
                at: now,
                size,
            },
        );
        if let (Some(id), Some(_)) = (message_id, self.config.duplicate_window) {
            self.dedup_order.push_back((now, id.clone()));
            self.dedup.insert(id, (sequence, now));
        }
        self.retained.enforce(
            &subject,
            self.config.max_msgs_per_subject,
            self.config.max_bytes,
        );
        PublishAck {
            stream: self.config.name.clone(),
            sequence,
            duplicate: false,
        }
    }

    /// Drops messages past `max_age` and dedup ids past the window.
    pub(super) fn expire(&mut self, now: Instant) {
        if let Some(max_age) = self.config.max_age {
            self.retained
                .expire_oldest(|stored| now.saturating_duration_since(stored.at) > max_age);
        }
        if let Some(window) = self.config.duplicate_window {
            while let Some((at, id)) = self.dedup_order.front() {
                if now.saturating_duration_since(*at) <= window {
                    break;
                }
                if self.dedup.get(id).is_some_and(|(_, stored)| stored == at) {
                    self.dedup.remove(id);
                }
                self.dedup_order.pop_front();
            }
        }
    }

    pub(super) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Sequences of the newest message of each subject, ascending.
    pub(super) fn last_per_subject(&self) -> Vec<u64> {
        self.retained.last_per_subject()
    }

    pub(super) fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            messages: self.retained.entries.len() as u64,
            bytes: self.retained.bytes(),
            first_sequence: self.retained.first_sequence(),
            last_sequence: self.last_sequence,
        }
    }
}
