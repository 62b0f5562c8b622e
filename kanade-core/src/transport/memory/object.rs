//! Memory object stores: bodies kept as shared chunks, streamed in and out
//! without an extra copy of the whole object.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{lock, Clock};
use crate::transport::{ObjectInfo, ObjectReader, ObjectStore, TransportError, TransportResult};

/// Size of the chunks bodies are read and stored in.
const CHUNK_BYTES: usize = 128 * 1024;

pub(super) struct MemoryObjects {
    bucket: String,
    clock: Clock,
    objects: Mutex<BTreeMap<String, Arc<StoredObject>>>,
}

struct StoredObject {
    info: ObjectInfo,
    chunks: Vec<Bytes>,
}

impl MemoryObjects {
    pub(super) fn new(bucket: String, clock: Clock) -> Self {
        Self {
            bucket,
            clock,
            objects: Mutex::new(BTreeMap::new()),
        }
    }

    fn stored(&self, name: &str) -> TransportResult<Arc<StoredObject>> {
        lock(&self.objects).get(name).cloned().ok_or_else(|| {
            TransportError::not_found(format!("object {name:?} in bucket {}", self.bucket))
        })
    }
}

/// Reads a stored object chunk by chunk.
struct ChunkReader {
    object: Arc<StoredObject>,
    chunk: usize,
    offset: usize,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while buf.remaining() > 0 {
            let Some(chunk) = this.object.chunks.get(this.chunk) else {
                break;
            };
            let rest = &chunk[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == chunk.len() {
                this.chunk += 1;
                this.offset = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(
        &self,
        name: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo> {
        if name.is_empty() {
            return Err(TransportError::InvalidConfig("object name is empty".into()));
        }
        let mut hasher = Sha256::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
            while chunk.len() < CHUNK_BYTES {
                let n = reader
                    .read_buf(&mut chunk)
                    .await
                    .map_err(|e| TransportError::Backend(Box::new(e)))?;
                if n == 0 {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            size += chunk.len() as u64;
            let full = chunk.len() == CHUNK_BYTES;
            chunks.push(chunk.freeze());
            if !full {
                break;
            }
        }
        let info = ObjectInfo {
            name: name.to_owned(),
            size,
            sha256: format!("{:x}", hasher.finalize()),
            modified: self.clock.now(),
        };
        let stored = Arc::new(StoredObject {
            info: info.clone(),
            chunks,
        });
        lock(&self.objects).insert(name.to_owned(), stored);
        Ok(info)
    }

    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        Ok(Box::new(ChunkReader {
            object: self.stored(name)?,
            chunk: 0,
            offset: 0,
        }))
    }

    async fn info(&self, name: &str) -> TransportResult<ObjectInfo> {
        Ok(self.stored(name)?.info.clone())
    }

    async fn delete(&self, name: &str) -> TransportResult<()> {
        lock(&self.objects).remove(name).map(|_| ()).ok_or_else(|| {
            TransportError::not_found(format!("object {name:?} in bucket {}", self.bucket))
        })
    }

    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        Ok(lock(&self.objects)
            .values()
            .map(|o| o.info.clone())
            .collect())
    }
}
