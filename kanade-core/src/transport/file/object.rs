//! File object stores: one file per object, `<encoded name>.obj`, holding
//! the body, then the JSON info, then the info's length (u32 LE) and the
//! magic `KOBJ`. Written to a temp file, fsynced, renamed into place.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::disk::{create_dir_durable, io_error, sync_dir, temp_path};
use super::{blocking, check_dir_name};
use crate::transport::{ObjectInfo, ObjectReader, ObjectStore, TransportError, TransportResult};

const TRAILER_MAGIC: &[u8; 4] = b"KOBJ";
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct StoredInfo {
    name: String,
    size: u64,
    sha256: String,
    modified: DateTime<Utc>,
}

impl From<StoredInfo> for ObjectInfo {
    fn from(s: StoredInfo) -> Self {
        ObjectInfo {
            name: s.name,
            size: s.size,
            sha256: s.sha256,
            modified: s.modified,
        }
    }
}

/// The directory name of a bucket.
pub(super) fn bucket_dir_name(bucket: &str) -> TransportResult<&str> {
    check_dir_name("object store", bucket)?;
    Ok(bucket)
}

/// A file name for an object name: safe characters kept, others `%XX`.
fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".obj");
    out
}

pub(super) struct FileObjects {
    bucket: String,
    dir: PathBuf,
}

impl FileObjects {
    pub(super) async fn open(bucket: String, dir: PathBuf) -> TransportResult<Self> {
        let create = dir.clone();
        blocking(move || create_dir_durable(&create)).await?;
        Ok(Self { bucket, dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }

    fn not_found(&self, name: &str) -> TransportError {
        TransportError::not_found(format!("object {name:?} in bucket {}", self.bucket))
    }
}

/// Reads an object file's trailer.
fn read_info(path: &Path) -> TransportResult<StoredInfo> {
    let mut file = std::fs::File::open(path).map_err(io_error("opening", path))?;
    let len = file
        .metadata()
        .map_err(io_error("reading metadata of", path))?
        .len();
    let corrupt =
        || TransportError::Backend(format!("{}: not a kanade object file", path.display()).into());
    if len < 8 {
        return Err(corrupt());
    }
    file.seek(SeekFrom::Start(len - 8))
        .map_err(io_error("seeking", path))?;
    let mut tail = [0u8; 8];
    file.read_exact(&mut tail)
        .map_err(io_error("reading", path))?;
    if &tail[4..] != TRAILER_MAGIC {
        return Err(corrupt());
    }
    let info_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if info_len + 8 > len {
        return Err(corrupt());
    }
    file.seek(SeekFrom::Start(len - 8 - info_len))
        .map_err(io_error("seeking", path))?;
    let mut info = vec![0u8; info_len as usize];
    file.read_exact(&mut info)
        .map_err(io_error("reading", path))?;
    serde_json::from_slice(&info).map_err(|_| corrupt())
}

#[async_trait]
impl ObjectStore for FileObjects {
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
        let path = self.path(name);
        let tmp = temp_path(&path);
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io_error("creating", &tmp))?;
        let result: TransportResult<ObjectInfo> = async {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut buffer).await.map_err(|e| {
                    TransportError::InvalidConfig(format!("reading the object body: {e}"))
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n])
                    .await
                    .map_err(io_error("writing", &tmp))?;
                size += n as u64;
            }
            let info = StoredInfo {
                name: name.to_owned(),
                size,
                sha256: format!("{:x}", hasher.finalize()),
                modified: Utc::now(),
            };
            let json =
                serde_json::to_vec(&info).map_err(|e| TransportError::Backend(Box::new(e)))?;
            file.write_all(&json)
                .await
                .map_err(io_error("writing", &tmp))?;
            file.write_all(&(json.len() as u32).to_le_bytes())
                .await
                .map_err(io_error("writing", &tmp))?;
            file.write_all(TRAILER_MAGIC)
                .await
                .map_err(io_error("writing", &tmp))?;
            file.sync_all().await.map_err(io_error("syncing", &tmp))?;
            Ok(info.into())
        }
        .await;
        drop(file);
        match result {
            Ok(info) => {
                let dir = self.dir.clone();
                blocking(move || {
                    std::fs::rename(&tmp, &path).map_err(io_error("renaming into place", &path))?;
                    sync_dir(&dir)
                })
                .await?;
                Ok(info)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        let path = self.path(name);
        let info_path = path.clone();
        let info = blocking(move || read_info(&info_path))
            .await
            .map_err(|e| match e {
                TransportError::NotFound { .. } => self.not_found(name),
                other => other,
            })?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => self.not_found(name),
                _ => io_error("opening", &path)(e),
            })?;
        Ok(Box::new(file.take(info.size)))
    }

    async fn info(&self, name: &str) -> TransportResult<ObjectInfo> {
        let path = self.path(name);
        blocking(move || read_info(&path))
            .await
            .map(Into::into)
            .map_err(|e| match e {
                TransportError::NotFound { .. } => self.not_found(name),
                other => other,
            })
    }

    async fn delete(&self, name: &str) -> TransportResult<()> {
        let path = self.path(name);
        let dir = self.dir.clone();
        blocking(move || {
            std::fs::remove_file(&path).map_err(io_error("removing", &path))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| match e {
            TransportError::NotFound { .. } => self.not_found(name),
            other => other,
        })
    }

    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut infos = Vec::new();
            for entry in std::fs::read_dir(&dir)
                .map_err(io_error("listing", &dir))?
                .flatten()
            {
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                if file_name.starts_with(".tmp-") || !file_name.ends_with(".obj") {
                    continue;
                }
                match read_info(&entry.path()) {
                    Ok(info) => infos.push(ObjectInfo::from(info)),
                    Err(TransportError::NotFound { .. }) => {} // deleted meanwhile
                    Err(e) => return Err(e),
                }
            }
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(infos)
        })
        .await
    }
}
