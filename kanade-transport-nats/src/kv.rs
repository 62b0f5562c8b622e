//! Key-value buckets over JetStream KV.

use std::sync::Arc;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use kanade_core::transport::subject::{validate_kv_key, validate_pattern};
use kanade_core::transport::{
    KeyValue, KvConfig, KvEntry, KvOperation, KvWatch, TransportError, TransportResult,
};

use crate::error::{backend, cause, Cause};
use crate::Shared;

pub(crate) struct NatsKv {
    pub(crate) shared: Arc<Shared>,
    pub(crate) bucket: String,
    pub(crate) store: kv::Store,
}

/// The JetStream KV definition for a core [`KvConfig`].
pub(crate) fn kv_config(config: &KvConfig, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: config.bucket.clone(),
        history: config.history as i64,
        max_age: config.ttl.unwrap_or_default(),
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// Opens a bucket, creating it when missing.
pub(crate) async fn open(shared: Arc<Shared>, config: KvConfig) -> TransportResult<NatsKv> {
    if config.history == 0 || config.history > 64 {
        return Err(TransportError::InvalidConfig(format!(
            "bucket {}: history must be 1..=64, got {}",
            config.bucket, config.history
        )));
    }
    let store = match shared.js.get_key_value(config.bucket.clone()).await {
        Ok(store) => store,
        Err(_) => shared
            .js
            .create_key_value(kv_config(&config, shared.replicas))
            .await
            .map_err(|e| backend(&format!("creating bucket {}", config.bucket), e))?,
    };
    Ok(NatsKv {
        shared,
        bucket: config.bucket,
        store,
    })
}

fn entry(e: kv::Entry) -> KvEntry {
    KvEntry {
        key: e.key,
        value: e.value,
        revision: e.revision,
        operation: match e.operation {
            kv::Operation::Put => KvOperation::Put,
            kv::Operation::Delete | kv::Operation::Purge => KvOperation::Delete,
        },
    }
}

impl NatsKv {
    fn check_value(&self, key: &str, value: &Bytes) -> TransportResult<()> {
        validate_kv_key(key)?;
        let limit = self.shared.max_payload();
        if value.len() > limit {
            return Err(TransportError::PayloadTooLarge {
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    async fn latest(&self, key: &str) -> TransportResult<Option<kv::Entry>> {
        self.store
            .entry(key.to_owned())
            .await
            .map_err(|e| backend(&format!("reading {key:?} in {}", self.bucket), e))
    }
}

struct NatsWatch(kv::Watch);

#[async_trait]
impl KvWatch for NatsWatch {
    async fn next(&mut self) -> Option<KvEntry> {
        loop {
            match self.0.next().await? {
                Ok(e) => return Some(entry(e)),
                Err(error) => tracing::warn!("kv watch: {error}"),
            }
        }
    }
}

#[async_trait]
impl KeyValue for NatsKv {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> TransportResult<Option<KvEntry>> {
        validate_kv_key(key)?;
        Ok(self
            .latest(key)
            .await?
            .filter(|e| e.operation == kv::Operation::Put)
            .map(entry))
    }

    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        self.store
            .put(key, value)
            .await
            .map_err(|e| backend(&format!("putting {key:?} in {}", self.bucket), e))
    }

    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        self.store
            .create(key, value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    TransportError::already_exists(format!("key {key:?} in bucket {}", self.bucket))
                }
                _ => backend(&format!("creating {key:?} in {}", self.bucket), e),
            })
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64> {
        self.check_value(key, &value)?;
        match self.store.update(key, value, expected).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let actual = self
                    .latest(key)
                    .await?
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map_or(0, |e| e.revision);
                Err(TransportError::RevisionMismatch {
                    key: key.to_owned(),
                    expected,
                    actual,
                })
            }
            Err(e) => Err(backend(&format!("updating {key:?} in {}", self.bucket), e)),
        }
    }

    async fn delete(&self, key: &str) -> TransportResult<()> {
        validate_kv_key(key)?;
        self.store
            .delete(key)
            .await
            .map_err(|e| backend(&format!("deleting {key:?} in {}", self.bucket), e))
    }

    async fn keys(&self) -> TransportResult<Vec<String>> {
        let mut keys: Vec<String> = match self.store.keys().await {
            Ok(stream) => stream.filter_map(|k| async move { k.ok() }).collect().await,
            Err(e) => return Err(backend(&format!("listing keys of {}", self.bucket), e)),
        };
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>> {
        validate_pattern(pattern)?;
        let watch = self
            .store
            .watch_with_history(pattern)
            .await
            .map_err(|e| backend(&format!("watching {pattern:?} in {}", self.bucket), e))?;
        Ok(Box::new(NatsWatch(watch)))
    }

    async fn history(&self, key: &str) -> TransportResult<Vec<KvEntry>> {
        validate_kv_key(key)?;
        let stream = match self.store.history(key).await {
            Ok(stream) => stream,
            // No stream or no message for the key: an empty history.
            Err(e) if cause(&e) == Cause::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(backend(
                    &format!("history of {key:?} in {}", self.bucket),
                    e,
                ));
            }
        };
        let entries: Vec<KvEntry> = stream
            .filter_map(|e| async move { e.ok().map(entry) })
            .collect()
            .await;
        Ok(entries)
    }
}
