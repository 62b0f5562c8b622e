//! Durable pull consumers over a memory stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::cursor::ConsumerState;
use super::lock;
use super::stream::{StreamShared, StreamState};
use crate::transport::subject::matches_any;
use crate::transport::{
    AckHandle, Consumer, ConsumerConfig, DeliverPolicy, Delivery, TransportResult,
};

pub(super) struct MemoryConsumer {
    stream: Arc<StreamShared>,
    state: Arc<Mutex<ConsumerState>>,
}

impl MemoryConsumer {
    pub(super) fn open(stream: Arc<StreamShared>, config: ConsumerConfig) -> Self {
        let state = {
            let mut stream_state = lock(&stream.state);
            stream_state.expire(Instant::now());
            let existing = stream_state.consumers.get(&config.name).cloned();
            match existing {
                Some(state) => {
                    // Re-opening with a new definition keeps the cursor and
                    // outstanding deliveries, and applies the new settings.
                    lock(&state).config = config;
                    state
                }
                None => {
                    let state = Arc::new(Mutex::new(start(&stream_state, config.clone())));
                    stream_state.consumers.insert(config.name, state.clone());
                    state
                }
            }
        };
        Self { stream, state }
    }
}

fn start(stream: &StreamState, config: ConsumerConfig) -> ConsumerState {
    let after_last = stream.last_sequence() + 1;
    let (initial, next_sequence) = match config.deliver_policy {
        DeliverPolicy::All => (VecDeque::new(), 1),
        DeliverPolicy::New => (VecDeque::new(), after_last),
        DeliverPolicy::LastPerSubject => {
            let seqs = stream
                .last_per_subject()
                .into_iter()
                .filter(|seq| wanted(&config, stream, *seq))
                .collect();
            (seqs, after_last)
        }
    };
    ConsumerState::new(config, initial, next_sequence)
}

fn wanted(config: &ConsumerConfig, stream: &StreamState, sequence: u64) -> bool {
    stream
        .retained
        .entries
        .get(&sequence)
        .is_some_and(|stored| {
            config.filter_subjects.is_empty()
                || matches_any(&config.filter_subjects, &stored.message.subject)
        })
}

/// What the consumer should do now.
enum Step {
    Deliver(Delivery),
    /// Nothing ready; wake at this instant (or on a stream change).
    Wait(Option<Instant>),
}

impl MemoryConsumer {
    fn step(&self, now: Instant) -> Step {
        let mut stream = lock(&self.stream.state);
        stream.expire(now);
        let mut consumer = lock(&self.state);
        let max_deliver = consumer.config.max_deliver;
        // Messages gone from the stream, or delivered max times, stop pending.
        let exhausted: Vec<u64> = consumer
            .pending
            .iter()
            .filter(|(seq, (count, due))| {
                !stream.retained.entries.contains_key(seq)
                    || (*due <= now && max_deliver.is_some_and(|max| *count >= max))
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in exhausted {
            consumer.pending.remove(&seq);
        }
        let due = consumer
            .pending
            .iter()
            .filter(|(_, (_, due))| *due <= now)
            .min_by_key(|(seq, (_, due))| (*due, **seq))
            .map(|(seq, _)| *seq);
        let sequence = due.or_else(|| {
            while let Some(seq) = consumer.initial.pop_front() {
                if stream.retained.entries.contains_key(&seq) {
                    return Some(seq);
                }
            }
            let next = consumer.next_sequence;
            let found = stream
                .retained
                .entries
                .range(next..)
                .map(|(seq, _)| *seq)
                .find(|seq| wanted(&consumer.config, &stream, *seq));
            consumer.next_sequence = found.map_or(stream.last_sequence() + 1, |seq| seq + 1);
            found
        });
        let Some(sequence) = sequence else {
            let wake = consumer.pending.values().map(|(_, due)| *due).min();
            return Step::Wait(wake);
        };
        let ack_wait = consumer.config.ack_wait;
        let delivered = consumer.pending.get(&sequence).map_or(0, |(n, _)| *n) + 1;
        consumer
            .pending
            .insert(sequence, (delivered, now + ack_wait));
        let message = stream.retained.entries[&sequence].message.clone();
        let acker = Arc::new(MemoryAck {
            stream: self.stream.clone(),
            consumer: self.state.clone(),
            sequence,
        });
        Step::Deliver(Delivery::new(message, sequence, delivered, acker))
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&self) -> TransportResult<Delivery> {
        loop {
            let changed = self.stream.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.step(Instant::now()) {
                Step::Deliver(delivery) => return Ok(delivery),
                Step::Wait(Some(wake)) => {
                    tokio::select! {
                        biased;
                        _ = changed => {}
                        _ = tokio::time::sleep_until(wake) => {}
                    }
                }
                Step::Wait(None) => changed.await,
            }
        }
    }
}

struct MemoryAck {
    stream: Arc<StreamShared>,
    consumer: Arc<Mutex<ConsumerState>>,
    sequence: u64,
}

#[async_trait]
impl AckHandle for MemoryAck {
    async fn ack(&self) -> TransportResult<()> {
        // Acks go by sequence: a late ack from an earlier delivery still counts.
        lock(&self.consumer).pending.remove(&self.sequence);
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> TransportResult<()> {
        {
            let mut consumer = lock(&self.consumer);
            let due = Instant::now() + delay.unwrap_or(Duration::ZERO);
            if let Some(entry) = consumer.pending.get_mut(&self.sequence) {
                entry.1 = due;
            }
        }
        self.stream.changed.notify_waiters();
        Ok(())
    }
}
