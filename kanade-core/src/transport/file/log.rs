//! The file message log: stream registry, publishes, plain subscriptions
//! (through the bus) and durable consumers.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::consumer::FileConsumer;
use super::disk::{create_dir_durable, io_error, write_atomic, DirLock};
use super::stream::{StoredStreamConfig, StreamIndex};
use super::{blocking, check_dir_name, lock, now_nanos, FileShared, StreamHandle};
use crate::transport::subject::{matches_any, overlaps, validate_pattern, validate_subject};
use crate::transport::{
    Consumer, ConsumerConfig, Headers, Message, MessageLog, PublishAck, StreamConfig, StreamInfo,
    Subscription, TransportError, TransportResult,
};

/// This process's copy of `streams/registry.json`, refreshed when the
/// file's metadata changes.
#[derive(Default)]
pub(super) struct RegistryCache {
    stamp: Option<(SystemTime, u64)>,
    streams: Vec<StoredStreamConfig>,
}

pub(super) struct FileLog {
    shared: Arc<FileShared>,
}

impl FileLog {
    pub(super) fn new(shared: Arc<FileShared>) -> Self {
        Self { shared }
    }
}

fn registry_path(shared: &FileShared) -> std::path::PathBuf {
    shared.root.join("streams").join("registry.json")
}

/// The stream definitions, re-read only when the registry file changed.
fn registry(shared: &FileShared) -> TransportResult<Vec<StoredStreamConfig>> {
    let path = registry_path(shared);
    let stamp = match std::fs::metadata(&path) {
        Ok(meta) => Some((
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("reading metadata of", &path)(e)),
    };
    let mut cache = lock(&shared.registry);
    if cache.stamp != stamp || stamp.is_none() {
        cache.streams = match stamp {
            None => Vec::new(),
            Some(_) => {
                let bytes = std::fs::read(&path).map_err(io_error("reading", &path))?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    TransportError::Backend(
                        format!("{}: unreadable stream registry: {e}", path.display()).into(),
                    )
                })?
            }
        };
        cache.stamp = stamp;
    }
    Ok(cache.streams.clone())
}

/// This process's handle on a stream, with its config kept current.
fn handle(shared: &FileShared, config: &StoredStreamConfig) -> Arc<StreamHandle> {
    let mut streams = lock(&shared.streams);
    let handle = streams
        .entry(config.name.clone())
        .or_insert_with(|| {
            let dir = shared.root.join("streams").join(&config.name);
            Arc::new(StreamHandle {
                index: std::sync::Mutex::new(StreamIndex::new(config.into(), &dir)),
                dir,
                changed: tokio::sync::Notify::new(),
            })
        })
        .clone();
    let wanted: StreamConfig = config.into();
    let mut index = handle.lock_index();
    if index.config != wanted {
        index.config = wanted;
    }
    drop(index);
    handle
}

fn stream_by_name(shared: &FileShared, name: &str) -> TransportResult<Arc<StreamHandle>> {
    let configs = registry(shared)?;
    let config = configs
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| TransportError::not_found(format!("stream {name}")))?;
    Ok(handle(shared, config))
}

fn publish_blocking(shared: &FileShared, message: Message) -> TransportResult<Option<PublishAck>> {
    let configs = registry(shared)?;
    let captured = configs
        .iter()
        .find(|c| matches_any(&c.subjects, &message.subject))
        .map(|c| handle(shared, c));
    let ack = match &captured {
        Some(stream) => {
            let _lock = DirLock::acquire(&stream.dir)?;
            let mut index = stream.lock_index();
            index.refresh(true, &mut shared.warnings())?;
            let ack = index.append(&message, now_nanos())?;
            index.compact_if_worthwhile()?;
            Some(ack)
        }
        None => None,
    };
    if let Some(stream) = &captured {
        stream.changed.notify_waiters();
    }
    if !ack.as_ref().is_some_and(|a| a.duplicate) {
        shared.bus.append(&message)?;
    }
    Ok(ack)
}

fn create_stream_blocking(
    shared: &FileShared,
    config: StreamConfig,
) -> TransportResult<StreamInfo> {
    let streams_dir = shared.root.join("streams");
    let _lock = DirLock::acquire(&streams_dir)?;
    let mut configs = registry(shared)?;
    for other in configs.iter().filter(|c| c.name != config.name) {
        for a in &config.subjects {
            if let Some(b) = other.subjects.iter().find(|b| overlaps(a, b)) {
                return Err(TransportError::InvalidConfig(format!(
                    "stream {} subject {a:?} overlaps stream {} subject {b:?}",
                    config.name, other.name
                )));
            }
        }
    }
    let stored = StoredStreamConfig::from(&config);
    match configs.iter_mut().find(|c| c.name == config.name) {
        Some(existing) if *existing == stored => {}
        Some(existing) => *existing = stored.clone(),
        None => configs.push(stored.clone()),
    }
    create_dir_durable(&streams_dir.join(&config.name))?;
    let bytes =
        serde_json::to_vec_pretty(&configs).map_err(|e| TransportError::Backend(Box::new(e)))?;
    write_atomic(&registry_path(shared), &bytes)?;
    let stream = handle(shared, &stored);
    let mut index = stream.lock_index();
    index.refresh(false, &mut shared.warnings())?;
    index.expire(now_nanos());
    Ok(index.info())
}

#[async_trait]
impl MessageLog for FileLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>> {
        validate_subject(subject)?;
        let limit = self.shared.settings.max_payload_bytes;
        if payload.len() > limit {
            return Err(TransportError::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let message = Message {
            subject: subject.to_owned(),
            headers: headers.into(),
            payload,
        };
        let shared = self.shared.clone();
        blocking(move || publish_blocking(&shared, message)).await
    }

    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription> {
        validate_pattern(pattern)?;
        let bus = self.shared.bus.clone();
        let pattern = pattern.to_owned();
        blocking(move || bus.subscribe(pattern)).await
    }

    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo> {
        check_dir_name("stream", &config.name)?;
        config.validate()?;
        let shared = self.shared.clone();
        blocking(move || create_stream_blocking(&shared, config)).await
    }

    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo> {
        let shared = self.shared.clone();
        let name = name.to_owned();
        blocking(move || {
            let stream = stream_by_name(&shared, &name)?;
            let mut index = stream.lock_index();
            index.refresh(false, &mut shared.warnings())?;
            index.expire(now_nanos());
            Ok(index.info())
        })
        .await
    }

    async fn create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>> {
        config.validate()?;
        let shared = self.shared.clone();
        let stream = stream.to_owned();
        blocking(move || {
            let handle = stream_by_name(&shared, &stream)?;
            let consumer = FileConsumer::open(shared, handle, &config)?;
            Ok(Arc::new(consumer) as Arc<dyn Consumer>)
        })
        .await
    }
}
