//! File KV buckets: a segmented log of puts and deletes per bucket.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use super::disk::{create_dir_durable, io_error, write_atomic, DirLock, Position, SegmentedLog};
use super::record::{Record, RecordKind};
use super::{blocking, check_dir_name, lock, now_nanos, FileShared, POLL_INTERVAL};
use crate::transport::subject::{matches, validate_kv_key as validate_key, validate_pattern};
use crate::transport::{
    Headers, KeyValue, KvConfig, KvEntry, KvOperation, KvWatch, TransportError, TransportResult,
};

/// Most history entries a key keeps.
pub(super) const MAX_HISTORY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredKvConfig {
    history: usize,
    ttl_ms: Option<u64>,
}

pub(super) struct FileKv {
    shared: Arc<FileShared>,
    bucket: String,
    dir: PathBuf,
    history: usize,
    ttl: Option<Duration>,
    index: Mutex<KvIndex>,
    changed: Notify,
    tail_running: Mutex<bool>,
}

struct KvIndex {
    log: SegmentedLog,
    position: Position,
    revision: u64,
    records_in_file: usize,
    keys: BTreeMap<String, VecDeque<(KvEntry, i64)>>,
    watchers: Vec<(String, u64, mpsc::UnboundedSender<KvEntry>)>,
}

impl FileKv {
    pub(super) fn open(shared: Arc<FileShared>, config: KvConfig) -> TransportResult<Arc<Self>> {
        check_dir_name("bucket", &config.bucket)?;
        if config.history == 0 || config.history > MAX_HISTORY {
            return Err(TransportError::InvalidConfig(format!(
                "bucket {}: history must be 1..={MAX_HISTORY}, got {}",
                config.bucket, config.history
            )));
        }
        if let Some(existing) = lock(&shared.kv).get(&config.bucket) {
            return Ok(existing.clone());
        }
        let dir = shared.root.join("kv").join(&config.bucket);
        create_dir_durable(&dir)?;
        let stored = {
            let _lock = DirLock::acquire(&dir)?;
            let path = dir.join("config.json");
            if path.exists() {
                let bytes = std::fs::read(&path).map_err(io_error("reading", &path))?;
                serde_json::from_slice::<StoredKvConfig>(&bytes).map_err(|e| {
                    TransportError::Backend(
                        format!("{}: unreadable bucket config: {e}", path.display()).into(),
                    )
                })?
            } else {
                let stored = StoredKvConfig {
                    history: config.history,
                    ttl_ms: config.ttl.map(|d| d.as_millis() as u64),
                };
                let bytes = serde_json::to_vec(&stored)
                    .map_err(|e| TransportError::Backend(Box::new(e)))?;
                write_atomic(&path, &bytes)?;
                stored
            }
        };
        let kv = Arc::new(Self {
            bucket: config.bucket.clone(),
            history: stored.history,
            ttl: stored.ttl_ms.map(Duration::from_millis),
            index: Mutex::new(KvIndex {
                log: SegmentedLog { dir: dir.clone() },
                position: Position::default(),
                revision: 0,
                records_in_file: 0,
                keys: BTreeMap::new(),
                watchers: Vec::new(),
            }),
            dir,
            shared: shared.clone(),
            changed: Notify::new(),
            tail_running: Mutex::new(false),
        });
        {
            // The first read takes the lock so a torn tail is repaired (and reported).
            let _lock = DirLock::acquire(&kv.dir)?;
            kv.refresh(&mut lock(&kv.index), true)?;
        }
        lock(&shared.kv).insert(config.bucket, kv.clone());
        Ok(kv)
    }

    fn is_live(&self, at: i64, now: i64) -> bool {
        self.ttl.is_none_or(|ttl| {
            now.saturating_sub(at) < i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX)
        })
    }

    fn current(&self, index: &KvIndex, key: &str, now: i64) -> Option<KvEntry> {
        let (entry, at) = index.keys.get(key)?.back()?;
        (entry.operation == KvOperation::Put && self.is_live(*at, now)).then(|| entry.clone())
    }

    /// Catches up with the log, notifying watchers of entries they have not seen.
    fn refresh(&self, index: &mut KvIndex, locked: bool) -> TransportResult<()> {
        let mut warnings = self.shared.warnings();
        let new = index
            .log
            .read_new(&mut index.position, locked, &mut warnings)?;
        drop(warnings);
        if new.reset {
            index.keys.clear();
            index.records_in_file = 0;
        }
        for (_, record) in new.scan.records {
            self.apply(index, record);
        }
        Ok(())
    }

    fn apply(&self, index: &mut KvIndex, record: Record) {
        index.records_in_file += 1;
        let operation = match record.kind {
            RecordKind::KvPut => KvOperation::Put,
            RecordKind::KvDelete => KvOperation::Delete,
            RecordKind::Meta => {
                index.revision = index.revision.max(record.sequence);
                return;
            }
            _ => return,
        };
        let entry = KvEntry {
            key: record.subject,
            value: record.payload,
            revision: record.sequence,
            operation,
        };
        let is_new = entry.revision > index.revision;
        index.revision = index.revision.max(entry.revision);
        if is_new {
            index.watchers.retain(|(pattern, from, tx)| {
                entry.revision <= *from
                    || !matches(pattern, &entry.key)
                    || tx.send(entry.clone()).is_ok()
            });
        }
        let history = index.keys.entry(entry.key.clone()).or_default();
        if history
            .back()
            .is_some_and(|(e, _)| e.revision >= entry.revision)
        {
            return; // replay of a compacted log: already known
        }
        history.push_back((entry, record.at_nanos));
        while history.len() > self.history {
            history.pop_front();
        }
    }

    /// A locked write: `check` decides (given the current entry) whether it
    /// may proceed.
    fn write(
        &self,
        key: &str,
        value: Bytes,
        operation: KvOperation,
        check: impl FnOnce(Option<&KvEntry>) -> TransportResult<()>,
    ) -> TransportResult<u64> {
        let _lock = DirLock::acquire(&self.dir)?;
        let mut index = lock(&self.index);
        self.refresh(&mut index, true)?;
        let now = now_nanos();
        check(self.current(&index, key, now).as_ref())?;
        let record = Record {
            kind: match operation {
                KvOperation::Put => RecordKind::KvPut,
                KvOperation::Delete => RecordKind::KvDelete,
            },
            sequence: index.revision + 1,
            at_nanos: now,
            subject: key.to_owned(),
            headers: Headers::new(),
            payload: value,
        };
        let mut position = index.position;
        index
            .log
            .append(&mut position, std::slice::from_ref(&record), true)?;
        index.position = position;
        let revision = record.sequence;
        self.apply(&mut index, record);
        self.compact_if_worthwhile(&mut index)?;
        Ok(revision)
    }

    fn compact_if_worthwhile(&self, index: &mut KvIndex) -> TransportResult<()> {
        let kept: usize = index.keys.values().map(VecDeque::len).sum();
        if index.position.offset < 1024 * 1024 || index.records_in_file < 4 * kept.max(1) {
            return Ok(());
        }
        let now = now_nanos();
        let mut entries: Vec<(KvEntry, i64)> = index
            .keys
            .values()
            .flatten()
            .filter(|(_, at)| self.is_live(*at, now))
            .cloned()
            .collect();
        entries.sort_by_key(|(e, _)| e.revision);
        let mut records = vec![Record {
            kind: RecordKind::Meta,
            sequence: index.revision,
            at_nanos: now,
            subject: String::new(),
            headers: Headers::new(),
            payload: Bytes::new(),
        }];
        records.extend(entries.into_iter().map(|(e, at)| Record {
            kind: match e.operation {
                KvOperation::Put => RecordKind::KvPut,
                KvOperation::Delete => RecordKind::KvDelete,
            },
            sequence: e.revision,
            at_nanos: at,
            subject: e.key,
            headers: Headers::new(),
            payload: e.value,
        }));
        let mut position = index.position;
        index.log.rewrite(&mut position, &records)?;
        index.position = position;
        index.records_in_file = records.len();
        Ok(())
    }

    fn check_value(&self, key: &str, value: &Bytes) -> TransportResult<()> {
        validate_key(key)?;
        let limit = self.shared.settings.max_payload_bytes;
        if value.len() > limit {
            return Err(TransportError::PayloadTooLarge {
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Runs a blocking closure against this bucket, then wakes local watchers.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&FileKv) -> TransportResult<T> + Send + 'static,
    ) -> TransportResult<T> {
        let kv = self.clone();
        let out = blocking(move || work(&kv)).await;
        self.changed.notify_waiters();
        out
    }

    fn ensure_tail(self: &Arc<Self>) {
        let mut running = lock(&self.tail_running);
        if *running {
            return;
        }
        *running = true;
        let kv = self.clone();
        tokio::spawn(async move {
            loop {
                let changed = kv.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let reader = kv.clone();
                let _ = blocking(move || {
                    let mut index = lock(&reader.index);
                    reader.refresh(&mut index, false)?;
                    index.watchers.retain(|(_, _, tx)| !tx.is_closed());
                    Ok(())
                })
                .await;
                {
                    let index = lock(&kv.index);
                    if index.watchers.is_empty() {
                        *lock(&kv.tail_running) = false;
                        return;
                    }
                }
                tokio::select! {
                    biased;
                    _ = changed => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
        });
    }
}

/// A [`KeyValue`] handle over a shared [`FileKv`].
pub(super) struct FileKvHandle(pub Arc<FileKv>);

struct FileWatch(mpsc::UnboundedReceiver<KvEntry>);

#[async_trait]
impl KvWatch for FileWatch {
    async fn next(&mut self) -> Option<KvEntry> {
        self.0.recv().await
    }
}

#[async_trait]
impl KeyValue for FileKvHandle {
    fn bucket(&self) -> &str {
        &self.0.bucket
    }

    async fn get(&self, key: &str) -> TransportResult<Option<KvEntry>> {
        validate_key(key)?;
        let key = key.to_owned();
        self.0
            .run(move |kv| {
                let mut index = lock(&kv.index);
                kv.refresh(&mut index, false)?;
                Ok(kv.current(&index, &key, now_nanos()))
            })
            .await
    }

    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.0.check_value(key, &value)?;
        let key = key.to_owned();
        self.0
            .run(move |kv| kv.write(&key, value, KvOperation::Put, |_| Ok(())))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.0.check_value(key, &value)?;
        let key = key.to_owned();
        let bucket = self.0.bucket.clone();
        self.0
            .run(move |kv| {
                kv.write(&key, value, KvOperation::Put, |current| match current {
                    Some(_) => Err(TransportError::already_exists(format!(
                        "key {key:?} in bucket {bucket}"
                    ))),
                    None => Ok(()),
                })
            })
            .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64> {
        self.0.check_value(key, &value)?;
        let key = key.to_owned();
        self.0
            .run(move |kv| {
                kv.write(&key, value, KvOperation::Put, |current| {
                    let actual = current.map_or(0, |e| e.revision);
                    if actual == expected {
                        Ok(())
                    } else {
                        Err(TransportError::RevisionMismatch {
                            key: key.clone(),
                            expected,
                            actual,
                        })
                    }
                })
            })
            .await
    }

    async fn delete(&self, key: &str) -> TransportResult<()> {
        validate_key(key)?;
        let key = key.to_owned();
        self.0
            .run(move |kv| kv.write(&key, Bytes::new(), KvOperation::Delete, |_| Ok(())))
            .await
            .map(|_| ())
    }

    async fn keys(&self) -> TransportResult<Vec<String>> {
        self.0
            .run(|kv| {
                let mut index = lock(&kv.index);
                kv.refresh(&mut index, false)?;
                let now = now_nanos();
                Ok(index
                    .keys
                    .keys()
                    .filter(|key| kv.current(&index, key, now).is_some())
                    .cloned()
                    .collect())
            })
            .await
    }

    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>> {
        validate_pattern(pattern)?;
        let pattern = pattern.to_owned();
        let rx = self
            .0
            .run(move |kv| {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut index = lock(&kv.index);
                kv.refresh(&mut index, false)?;
                let now = now_nanos();
                let mut initial: Vec<KvEntry> = index
                    .keys
                    .keys()
                    .filter(|key| matches(&pattern, key))
                    .filter_map(|key| kv.current(&index, key, now))
                    .collect();
                initial.sort_by_key(|e| e.revision);
                for entry in initial {
                    let _ = tx.send(entry);
                }
                let from = index.revision;
                index.watchers.push((pattern, from, tx));
                Ok(rx)
            })
            .await?;
        self.0.ensure_tail();
        Ok(Box::new(FileWatch(rx)))
    }

    async fn history(&self, key: &str) -> TransportResult<Vec<KvEntry>> {
        validate_key(key)?;
        let key = key.to_owned();
        self.0
            .run(move |kv| {
                let mut index = lock(&kv.index);
                kv.refresh(&mut index, false)?;
                let now = now_nanos();
                Ok(index
                    .keys
                    .get(&key)
                    .map(|h| {
                        h.iter()
                            .filter(|(_, at)| kv.is_live(*at, now))
                            .map(|(e, _)| e.clone())
                            .collect()
                    })
                    .unwrap_or_default())
            })
            .await
    }
}
