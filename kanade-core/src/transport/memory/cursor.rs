//! A durable consumer's cursor: where it is in its stream and what it has
//! delivered but not had acked. Kept by the stream (so it survives
//! re-opening the consumer by name) and moved by the consumer; a leaf
//! below both.

use std::collections::{BTreeMap, VecDeque};

use tokio::time::Instant;

use crate::transport::ConsumerConfig;

/// A consumer's cursor and outstanding deliveries; survives re-opening by name.
pub(super) struct ConsumerState {
    pub(super) config: ConsumerConfig,
    /// Sequences to deliver before new ones (last-per-subject replay).
    pub(super) initial: VecDeque<u64>,
    /// Next sequence to consider for new messages.
    pub(super) next_sequence: u64,
    /// Delivered, not yet acked: sequence → (deliveries so far, redeliver at).
    pub(super) pending: BTreeMap<u64, (u32, Instant)>,
}

impl ConsumerState {
    /// A cursor that first replays `initial`, then considers sequences
    /// from `next_sequence` on, with nothing outstanding.
    pub(super) fn new(config: ConsumerConfig, initial: VecDeque<u64>, next_sequence: u64) -> Self {
        Self {
            config,
            initial,
            next_sequence,
            pending: BTreeMap::new(),
        }
    }
}
