//! Durable consumers whose state lives in a file, shared by every process.
//!
//! `streams/<NAME>/consumers/<consumer>.json` holds the cursor and the
//! outstanding deliveries; every step (deliver, ack, nak) runs under the
//! consumer's directory lock and rewrites the file atomically, so two
//! processes share one consumer's work and a restarted process resumes
//! where the consumer stopped.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::disk::{create_dir_durable, io_error, write_atomic, DirLock};
use super::stream::StreamIndex;
use super::{now_nanos, FileShared, StreamHandle, POLL_INTERVAL};
use crate::transport::subject::matches_any;
use crate::transport::{
    AckHandle, Consumer, ConsumerConfig, DeliverPolicy, Delivery, TransportError, TransportResult,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConsumerState {
    name: String,
    filter_subjects: Vec<String>,
    ack_wait_ms: u64,
    max_deliver: Option<u32>,
    initial: VecDeque<u64>,
    next_sequence: u64,
    /// sequence → (deliveries so far, redeliver at unix nanos)
    pending: BTreeMap<u64, (u32, i64)>,
}

impl ConsumerState {
    fn start(config: &ConsumerConfig, index: &StreamIndex) -> Self {
        let after_last = index.last_sequence() + 1;
        let mut state = Self {
            name: config.name.clone(),
            filter_subjects: config.filter_subjects.clone(),
            ack_wait_ms: config.ack_wait.as_millis() as u64,
            max_deliver: config.max_deliver,
            initial: VecDeque::new(),
            next_sequence: 1,
            pending: BTreeMap::new(),
        };
        match config.deliver_policy {
            DeliverPolicy::All => {}
            DeliverPolicy::New => state.next_sequence = after_last,
            DeliverPolicy::LastPerSubject => {
                state.initial = index
                    .last_per_subject()
                    .into_iter()
                    .filter(|seq| state.wanted(index, *seq))
                    .collect();
                state.next_sequence = after_last;
            }
        }
        state
    }

    fn wanted(&self, index: &StreamIndex, seq: u64) -> bool {
        index.retained.entries.get(&seq).is_some_and(|e| {
            self.filter_subjects.is_empty() || matches_any(&self.filter_subjects, &e.subject)
        })
    }

    /// Picks the next sequence to deliver, or the instant to wake.
    fn step(&mut self, index: &StreamIndex, now: i64) -> Result<u64, Option<i64>> {
        let max_deliver = self.max_deliver;
        self.pending.retain(|seq, (count, due)| {
            index.retained.entries.contains_key(seq)
                && !(*due <= now && max_deliver.is_some_and(|max| *count >= max))
        });
        let due = self
            .pending
            .iter()
            .filter(|(_, (_, due))| *due <= now)
            .min_by_key(|(seq, (_, due))| (*due, **seq))
            .map(|(seq, _)| *seq);
        let chosen = due.or_else(|| {
            while let Some(seq) = self.initial.pop_front() {
                if index.retained.entries.contains_key(&seq) {
                    return Some(seq);
                }
            }
            let found = index
                .retained
                .entries
                .range(self.next_sequence..)
                .map(|(seq, _)| *seq)
                .find(|seq| self.wanted(index, *seq));
            self.next_sequence = found.map_or(index.last_sequence() + 1, |seq| seq + 1);
            found
        });
        match chosen {
            Some(seq) => {
                let delivered = self.pending.get(&seq).map_or(0, |(n, _)| *n) + 1;
                let due = now.saturating_add(self.ack_wait_ms as i64 * 1_000_000);
                self.pending.insert(seq, (delivered, due));
                Ok(seq)
            }
            None => Err(self.pending.values().map(|(_, due)| *due).min()),
        }
    }
}

/// One locked step's outcome: a delivery, or when to look again.
type StepResult = TransportResult<Result<Delivery, Option<i64>>>;

/// A durable consumer shared through its state file.
#[derive(Clone)]
pub(super) struct FileConsumer {
    shared: Arc<FileShared>,
    stream: Arc<StreamHandle>,
    dir: PathBuf,
    path: PathBuf,
    /// The step running on the blocking pool, if a `next()` started one.
    /// Kept here rather than in `next()` so a dropped `next()` does not
    /// lose the delivery that step records: the next call collects it.
    /// The lock also serialises `next()` calls on this handle.
    in_flight: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<StepResult>>>>,
}

impl FileConsumer {
    /// Opens (or creates) the consumer `config.name` on `stream`.
    pub(super) fn open(
        shared: Arc<FileShared>,
        stream: Arc<StreamHandle>,
        config: &ConsumerConfig,
    ) -> TransportResult<Self> {
        if config.name.is_empty()
            || !config
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TransportError::InvalidConfig(format!(
                "consumer name {:?} must be ASCII letters, digits, '-' or '_'",
                config.name
            )));
        }
        let dir = stream.dir.join("consumers");
        create_dir_durable(&dir)?;
        let path = dir.join(format!("{}.json", config.name));
        let consumer = Self {
            shared,
            stream,
            dir,
            path,
            in_flight: Arc::default(),
        };
        let _lock = DirLock::acquire(&consumer.dir)?;
        if consumer.path.exists() {
            // Re-opening with a new definition keeps the cursor and
            // outstanding deliveries, and applies the new settings.
            let mut state = consumer.load()?;
            state.filter_subjects = config.filter_subjects.clone();
            state.ack_wait_ms = config.ack_wait.as_millis() as u64;
            state.max_deliver = config.max_deliver;
            consumer.save(&state)?;
        } else {
            let mut index = consumer.stream.lock_index();
            index.refresh(false, &mut consumer.shared.warnings())?;
            let state = ConsumerState::start(config, &index);
            consumer.save(&state)?;
        }
        Ok(consumer)
    }

    fn load(&self) -> TransportResult<ConsumerState> {
        let bytes =
            std::fs::read(&self.path).map_err(io_error("reading consumer state", &self.path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            TransportError::Backend(
                format!("{}: unreadable consumer state: {e}", self.path.display()).into(),
            )
        })
    }

    fn save(&self, state: &ConsumerState) -> TransportResult<()> {
        let bytes = serde_json::to_vec(state).map_err(|e| TransportError::Backend(Box::new(e)))?;
        write_atomic(&self.path, &bytes)
    }

    /// One locked step: a delivery, or when to look again.
    fn try_next(&self) -> StepResult {
        let _lock = DirLock::acquire(&self.dir)?;
        let now = now_nanos();
        let mut index = self.stream.lock_index();
        index.refresh(false, &mut self.shared.warnings())?;
        index.expire(now);
        let mut state = self.load()?;
        let before = state.clone();
        let step = state.step(&index, now);
        let outcome = match step {
            Ok(seq) => {
                // Another process may have compacted the log since the
                // refresh: catch up once; if the message is gone (expired),
                // leave the state untouched and look again.
                let message = match index.read(seq)? {
                    Some(message) => message,
                    None => {
                        index.refresh(false, &mut self.shared.warnings())?;
                        match index.read(seq)? {
                            Some(message) => message,
                            None => return Ok(Err(Some(now))),
                        }
                    }
                };
                let delivered = state.pending.get(&seq).map_or(1, |(n, _)| *n);
                let acker = Arc::new(FileAck {
                    dir: self.dir.clone(),
                    path: self.path.clone(),
                    stream: self.stream.clone(),
                    sequence: seq,
                });
                Ok(Delivery::new(message, seq, delivered, acker))
            }
            Err(wake) => Err(wake),
        };
        if state.pending != before.pending
            || state.next_sequence != before.next_sequence
            || state.initial != before.initial
        {
            self.save(&state)?;
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Consumer for FileConsumer {
    // Cancel-safe: a step on the blocking pool records its delivery in the
    // state file, so its join handle is parked in `in_flight` and awaited
    // by reference; if this call is dropped, the next one collects it.
    async fn next(&self) -> TransportResult<Delivery> {
        let mut in_flight = self.in_flight.lock().await;
        loop {
            let changed = self.stream.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // A step left by a dropped call may predate `changed`: if it
            // found nothing, step again at once rather than wait.
            let resumed = in_flight.is_some();
            let handle = in_flight.get_or_insert_with(|| {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.try_next())
            });
            let joined = handle.await;
            *in_flight = None;
            let step = joined.map_err(|e| TransportError::Backend(Box::new(e)))??;
            match step {
                Ok(delivery) => return Ok(delivery),
                Err(_) if resumed => {}
                Err(wake) => {
                    let mut wait = POLL_INTERVAL;
                    if let Some(due) = wake {
                        let until =
                            Duration::from_nanos(due.saturating_sub(now_nanos()).max(0) as u64);
                        wait = wait.min(until);
                    }
                    tokio::select! {
                        biased;
                        _ = changed => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[derive(Clone)]
struct FileAck {
    dir: PathBuf,
    path: PathBuf,
    stream: Arc<StreamHandle>,
    sequence: u64,
}

impl FileAck {
    fn update(&self, delay: Option<Option<Duration>>) -> TransportResult<()> {
        let _lock = DirLock::acquire(&self.dir)?;
        let bytes =
            std::fs::read(&self.path).map_err(io_error("reading consumer state", &self.path))?;
        let mut state: ConsumerState = serde_json::from_slice(&bytes)
            .map_err(|e| TransportError::Backend(format!("{}: {e}", self.path.display()).into()))?;
        // Acks go by sequence: a late ack from an earlier delivery still counts.
        if !state.pending.contains_key(&self.sequence) {
            return Ok(());
        }
        match delay {
            None => {
                state.pending.remove(&self.sequence);
            }
            Some(delay) => {
                let due =
                    now_nanos().saturating_add(delay.unwrap_or(Duration::ZERO).as_nanos() as i64);
                if let Some(entry) = state.pending.get_mut(&self.sequence) {
                    entry.1 = due;
                }
            }
        }
        let bytes = serde_json::to_vec(&state).map_err(|e| TransportError::Backend(Box::new(e)))?;
        write_atomic(&self.path, &bytes)
    }

    async fn run(&self, delay: Option<Option<Duration>>) -> TransportResult<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.update(delay))
            .await
            .map_err(|e| TransportError::Backend(Box::new(e)))??;
        self.stream.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl AckHandle for FileAck {
    async fn ack(&self) -> TransportResult<()> {
        self.run(None).await
    }

    async fn nak(&self, delay: Option<Duration>) -> TransportResult<()> {
        self.run(Some(delay)).await
    }
}
