//! Object store checks: digest, listing, deletion, 64 MiB streaming.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{always, check, ensure, fail, Check, CheckResult};
use crate::transport::{Capabilities, ObjectStoreConfig, Transport, TransportError};

pub(super) fn checks<T: Transport + ?Sized + 'static>() -> Vec<Check<T>> {
    vec![
        check!(object_put_get_info_list_delete, always),
        check!(object_streams_64_mib, needs_64_mib),
    ]
}

const LARGE: u64 = 64 * 1024 * 1024;

fn needs_64_mib(caps: &Capabilities) -> Option<String> {
    caps.max_object_bytes
        .filter(|max| *max < LARGE)
        .map(|max| format!("objects limited to {max} bytes"))
}

/// An `AsyncRead` producing `len` deterministic pseudo-random bytes on the
/// fly, so a large body never exists in memory on the writer's side.
pub struct GeneratedBody {
    remaining: u64,
    position: u64,
    state: u64,
}

impl GeneratedBody {
    /// `len` bytes from `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        Self {
            remaining: len,
            position: 0,
            state: seed | 1,
        }
    }
}

impl AsyncRead for GeneratedBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.remaining) as usize;
        // Byte i is byte i % 8 of the (i / 8)-th xorshift64 word, whatever
        // the sizes of the reads that ask for it.
        let mut produced = 0;
        while produced < n {
            let within = (self.position % 8) as usize;
            if within == 0 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
            }
            let bytes = self.state.to_le_bytes();
            let take = (n - produced).min(8 - within);
            buf.put_slice(&bytes[within..within + take]);
            produced += take;
            self.position += take as u64;
        }
        self.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

async fn object_put_get_info_list_delete<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let store = t
        .object_store(ObjectStoreConfig::new("conf_objects"))
        .await
        .map_err(fail("open store"))?;
    let body = b"#!/bin/sh\necho hi\n".to_vec();
    let info = store
        .put("echo/1.0.0", &mut &body[..])
        .await
        .map_err(fail("put"))?;
    let expected = format!("{:x}", Sha256::digest(&body));
    ensure!(
        info.sha256 == expected,
        "digest {} expected {expected}",
        info.sha256
    );
    ensure!(info.size == body.len() as u64, "size {}", info.size);
    let mut back = Vec::new();
    store
        .get("echo/1.0.0")
        .await
        .map_err(fail("get"))?
        .read_to_end(&mut back)
        .await
        .map_err(fail("read"))?;
    ensure!(back == body, "body changed in the store");
    let again = store.info("echo/1.0.0").await.map_err(fail("info"))?;
    ensure!(
        again.sha256 == expected && again.name == "echo/1.0.0",
        "info {again:?}"
    );
    store
        .put("a-first", &mut &b""[..])
        .await
        .map_err(fail("put empty"))?;
    let names: Vec<_> = store
        .list()
        .await
        .map_err(fail("list"))?
        .into_iter()
        .map(|i| i.name)
        .collect();
    ensure!(names == ["a-first", "echo/1.0.0"], "list {names:?}");
    store.delete("echo/1.0.0").await.map_err(fail("delete"))?;
    let gone = store.info("echo/1.0.0").await;
    ensure!(
        matches!(gone, Err(TransportError::NotFound { .. })),
        "info after delete gave {gone:?}"
    );
    ensure!(
        store.get("echo/1.0.0").await.is_err(),
        "get after delete succeeded"
    );
    Ok(())
}

async fn object_streams_64_mib<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let store = t
        .object_store(ObjectStoreConfig::new("conf_large"))
        .await
        .map_err(fail("open store"))?;
    let mut expected = Sha256::new();
    let mut source = GeneratedBody::new(LARGE, 42);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut chunk).await.map_err(fail("generate"))?;
        if n == 0 {
            break;
        }
        expected.update(&chunk[..n]);
    }
    let expected = format!("{:x}", expected.finalize());
    let info = store
        .put("big.bin", &mut GeneratedBody::new(LARGE, 42))
        .await
        .map_err(fail("put 64 MiB"))?;
    ensure!(info.size == LARGE, "stored {} bytes", info.size);
    ensure!(
        info.sha256 == expected,
        "digest of the stored object differs"
    );
    let mut reader = store.get("big.bin").await.map_err(fail("get"))?;
    let mut actual = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut chunk).await.map_err(fail("read"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        actual.update(&chunk[..n]);
    }
    ensure!(total == LARGE, "read back {total} bytes");
    ensure!(
        format!("{:x}", actual.finalize()) == expected,
        "streamed body differs from what was put"
    );
    Ok(())
}
