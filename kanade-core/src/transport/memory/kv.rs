//! Memory KV buckets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lock;
use crate::transport::subject::{matches, validate_kv_key as validate_key, validate_pattern};
use crate::transport::{
    KeyValue, KvConfig, KvEntry, KvOperation, KvWatch, TransportError, TransportResult,
};

pub(super) struct MemoryKv {
    config: KvConfig,
    max_value_bytes: usize,
    state: Mutex<KvState>,
}

struct KvState {
    revision: u64,
    keys: BTreeMap<String, VecDeque<(KvEntry, Instant)>>,
    watchers: Vec<(String, mpsc::UnboundedSender<KvEntry>)>,
    /// How many watchers were left after the last sweep of the gone ones.
    watchers_swept: usize,
}

impl MemoryKv {
    pub(super) fn new(config: KvConfig, max_value_bytes: usize) -> Self {
        Self {
            config,
            max_value_bytes,
            state: Mutex::new(KvState {
                revision: 0,
                keys: BTreeMap::new(),
                watchers: Vec::new(),
                watchers_swept: 0,
            }),
        }
    }

    fn is_live(&self, at: Instant, now: Instant) -> bool {
        self.config
            .ttl
            .is_none_or(|ttl| now.saturating_duration_since(at) < ttl)
    }

    /// The key's latest entry if it is a live put.
    fn current(&self, state: &KvState, key: &str, now: Instant) -> Option<KvEntry> {
        let (entry, at) = state.keys.get(key)?.back()?;
        (entry.operation == KvOperation::Put && self.is_live(*at, now)).then(|| entry.clone())
    }

    fn latest_revision(&self, state: &KvState, key: &str, now: Instant) -> u64 {
        self.current(state, key, now).map_or(0, |e| e.revision)
    }

    /// Appends an entry, trims history and notifies watchers.
    fn write(&self, state: &mut KvState, key: &str, value: Bytes, operation: KvOperation) -> u64 {
        state.revision += 1;
        let entry = KvEntry {
            key: key.to_owned(),
            value,
            revision: state.revision,
            operation,
        };
        let history = state.keys.entry(key.to_owned()).or_default();
        history.push_back((entry.clone(), Instant::now()));
        while history.len() > self.config.history {
            history.pop_front();
        }
        state.watchers.retain(|(pattern, tx)| {
            // A watcher that left goes at the next write, whatever key.
            !tx.is_closed() && (!matches(pattern, key) || tx.send(entry.clone()).is_ok())
        });
        entry.revision
    }

    fn check_value(&self, key: &str, value: &Bytes) -> TransportResult<()> {
        validate_key(key)?;
        if value.len() > self.max_value_bytes {
            return Err(TransportError::PayloadTooLarge {
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

struct MemoryWatch(mpsc::UnboundedReceiver<KvEntry>);

#[async_trait]
impl KvWatch for MemoryWatch {
    async fn next(&mut self) -> Option<KvEntry> {
        self.0.recv().await
    }
}

#[async_trait]
impl KeyValue for MemoryKv {
    fn bucket(&self) -> &str {
        &self.config.bucket
    }

    async fn get(&self, key: &str) -> TransportResult<Option<KvEntry>> {
        validate_key(key)?;
        Ok(self.current(&lock(&self.state), key, Instant::now()))
    }

    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        let mut state = lock(&self.state);
        Ok(self.write(&mut state, key, value, KvOperation::Put))
    }

    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        let mut state = lock(&self.state);
        if self.current(&state, key, Instant::now()).is_some() {
            return Err(TransportError::already_exists(format!(
                "key {key:?} in bucket {}",
                self.config.bucket
            )));
        }
        Ok(self.write(&mut state, key, value, KvOperation::Put))
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        let mut state = lock(&self.state);
        let actual = self.latest_revision(&state, key, Instant::now());
        if actual != expected {
            return Err(TransportError::RevisionMismatch {
                key: key.to_owned(),
                expected,
                actual,
            });
        }
        Ok(self.write(&mut state, key, value, KvOperation::Put))
    }

    async fn delete(&self, key: &str) -> TransportResult<()> {
        validate_key(key)?;
        let mut state = lock(&self.state);
        self.write(&mut state, key, Bytes::new(), KvOperation::Delete);
        Ok(())
    }

    async fn keys(&self) -> TransportResult<Vec<String>> {
        let state = lock(&self.state);
        let now = Instant::now();
        Ok(state
            .keys
            .keys()
            .filter(|key| self.current(&state, key, now).is_some())
            .cloned()
            .collect())
    }

    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>> {
        validate_pattern(pattern)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
        let now = Instant::now();
        let mut initial: Vec<KvEntry> = state
            .keys
            .keys()
            .filter(|key| matches(pattern, key))
            .filter_map(|key| self.current(&state, key, now))
            .collect();
        initial.sort_by_key(|e| e.revision);
        for entry in initial {
            // The receiver is alive: it is returned below.
            let _ = tx.send(entry);
        }
        // Watchers that left are otherwise dropped at the next write, and
        // a bucket written rarely (agent config) would keep every watch a
        // reconnecting client ever made: sweep them whenever the list has
        // doubled since the last sweep (amortised O(1) per watch).
        if state.watchers.len() >= (2 * state.watchers_swept).max(64) {
            state.watchers.retain(|(_, tx)| !tx.is_closed());
            state.watchers_swept = state.watchers.len();
        }
        state.watchers.push((pattern.to_owned(), tx));
        Ok(Box::new(MemoryWatch(rx)))
    }

    async fn history(&self, key: &str) -> TransportResult<Vec<KvEntry>> {
        validate_key(key)?;
        let state = lock(&self.state);
        let now = Instant::now();
        Ok(state
            .keys
            .get(key)
            .map(|h| {
                h.iter()
                    .filter(|(_, at)| self.is_live(*at, now))
                    .map(|(e, _)| e.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watches a client made and dropped do not pile up in a bucket that
    /// is never written, and a live one still sees the next write.
    #[tokio::test]
    async fn watches_that_left_are_swept_without_a_write() {
        let kv = MemoryKv::new(KvConfig::new("swept"), 1024);
        let mut live = kv.watch(">").await.expect("watch");
        for _ in 0..1000 {
            drop(kv.watch(">").await.expect("watch"));
        }
        let kept = lock(&kv.state).watchers.len();
        assert!(kept <= 130, "{kept} watchers kept for 1 live one");
        kv.put("k", Bytes::from_static(b"v")).await.expect("put");
        let entry = live.next().await.expect("the live watch sees the put");
        assert_eq!(entry.key, "k");
        assert_eq!(lock(&kv.state).watchers.len(), 1);
    }
}
