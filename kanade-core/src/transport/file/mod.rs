//! The file transport: one directory shared by a backend and agents in
//! separate processes on one host, with no broker. Crash-safe: whatever it
//! acknowledged survives `kill -9`.
//!
//! # On-disk layout (format version 1)
//!
//! ```text
//! <root>/kanade-store.json            {"format":"kanade-file-transport","version":1}
//! <root>/streams/lock                 lock for the registry
//! <root>/streams/registry.json        every stream's definition
//! <root>/streams/<NAME>/lock          writer lock of the stream
//! <root>/streams/<NAME>/data-<g>.log  the stream's records (generation g)
//! <root>/streams/<NAME>/consumers/<c>.json  a durable consumer's state
//! <root>/bus/lock, bus/seg-<n>.log    every publish, for plain subscribers
//! <root>/kv/<bucket>/config.json      history depth and TTL
//! <root>/kv/<bucket>/lock, data-<g>.log     the bucket's records
//! <root>/objects/<bucket>/<name>.obj  body, then JSON info, then its length
//! ```
//!
//! Logs are append-only sequences of checksummed records (see the `record`
//! module docs). An append is acknowledged only after `fsync`; a torn
//! record left by a crash is detected by length and CRC, skipped with a
//! warning and truncated by the next writer, never served as data. Small
//! files (registry, consumer state, objects) are written to a temp file,
//! fsynced, renamed into place, and the directory fsynced.
//!
//! Stream limits (keep-last-per-subject, max bytes, max age) are applied
//! when the log is replayed; compaction rewrites the log as a new
//! generation holding only live messages (plus dedup ids still inside the
//! window) once dead records take over half the file, so an unexpired
//! message is never lost.
//!
//! # Several processes
//!
//! Writers take an OS file lock (`flock`, through `std::fs::File::lock`) on
//! the log's directory, catch up with the log, then append — so sequences,
//! dedup and KV compare-and-swap are correct across processes. Readers
//! learn of other processes' writes by **polling** the log length every
//! [`POLL_INTERVAL`] (one `stat` per log per tick, done by one task per
//! process, not per subscriber); writes from the same process wake readers
//! at once. Polling was chosen over file-change notifications because it
//! works the same on every filesystem (including network and container
//! mounts where inotify is unreliable), needs no extra dependency, and a
//! 5 ms tick is cheap on one host.

mod bus;
mod consumer;
mod disk;
mod kv;
mod log;
mod object;
mod record;
mod stream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use self::disk::{create_dir_durable, io_error, write_atomic};
use self::stream::StreamIndex;
use super::{
    Capabilities, KeyValue, KvConfig, MessageLog, ObjectStore, ObjectStoreConfig, Transport,
    TransportError, TransportResult,
};

/// How often readers look for other processes' writes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "kanade-file-transport";
const STORE_FILE: &str = "kanade-store.json";

#[derive(Debug, Serialize, Deserialize)]
struct StoreHeader {
    format: String,
    version: u32,
}

/// Tunables of a [`FileTransport`].
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Largest message payload or KV value (default 1 MiB, as NATS).
    pub max_payload_bytes: usize,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
        }
    }
}

/// The file transport. Clones share one process-local state.
#[derive(Clone)]
pub struct FileTransport {
    shared: Arc<FileShared>,
}

impl std::fmt::Debug for FileTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTransport")
            .field("root", &self.shared.root)
            .finish_non_exhaustive()
    }
}

/// Process-local state of one opened store.
pub(crate) struct FileShared {
    root: PathBuf,
    settings: FileSettings,
    streams: Mutex<HashMap<String, Arc<StreamHandle>>>,
    kv: Mutex<HashMap<String, Arc<kv::FileKv>>>,
    bus: Arc<bus::Bus>,
    registry: Mutex<log::RegistryCache>,
    warnings: Mutex<Vec<String>>,
}

/// One stream as seen by this process.
pub(crate) struct StreamHandle {
    dir: PathBuf,
    index: Mutex<StreamIndex>,
    /// Woken on local appends, acks and naks.
    changed: Notify,
}

impl StreamHandle {
    fn lock_index(&self) -> MutexGuard<'_, StreamIndex> {
        lock(&self.index)
    }
}

impl FileShared {
    /// A guard over the recovery warnings, for code that may add some.
    fn warnings(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.warnings)
    }
}

impl FileTransport {
    /// Opens the store at `root`, creating it if the directory is missing or
    /// empty. A non-empty directory without a store header, or a store of a
    /// newer format, is refused with an error naming the path; nothing is
    /// written to it. Processes opening a new store at the same moment
    /// agree: one writes the header, the others wait for it (up to 5 s).
    pub fn open(root: impl AsRef<Path>) -> TransportResult<Self> {
        Self::open_with(root, FileSettings::default())
    }

    /// [`FileTransport::open`] with settings.
    pub fn open_with(root: impl AsRef<Path>, settings: FileSettings) -> TransportResult<Self> {
        let root = root.as_ref().to_path_buf();
        check_or_init_store(&root)?;
        for dir in ["streams", "bus", "kv", "objects"] {
            create_dir_durable(&root.join(dir))?;
        }
        let bus = Arc::new(bus::Bus::new(root.join("bus")));
        Ok(Self {
            shared: Arc::new(FileShared {
                root,
                settings,
                streams: Mutex::new(HashMap::new()),
                kv: Mutex::new(HashMap::new()),
                bus,
                registry: Mutex::new(log::RegistryCache::default()),
                warnings: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Problems found and repaired while reading (torn records skipped).
    pub fn recovery_warnings(&self) -> Vec<String> {
        self.shared.warnings().clone()
    }
}

/// How long an open waits for another process that is creating the same
/// store (its header still a temporary file) before creating it itself.
const CONCURRENT_INIT_WAIT: Duration = Duration::from_secs(5);

/// Whether `root` holds nothing but the temporary of a header being
/// written (another process initialising the store right now, or one that
/// died doing so).
fn only_header_temporaries(root: &Path) -> bool {
    let suffix = format!("-{STORE_FILE}");
    std::fs::read_dir(root).is_ok_and(|entries| {
        let mut any = false;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with(".tmp-") && name.ends_with(&suffix)) {
                return false;
            }
            any = true;
        }
        any
    })
}

fn check_or_init_store(root: &Path) -> TransportResult<()> {
    let header_path = root.join(STORE_FILE);
    // Several processes may open a new store at once (a backend and its
    // agents started together): while one writes the header, the others
    // wait for it instead of calling the directory foreign.
    let waited_since = std::time::Instant::now();
    while !header_path.exists()
        && only_header_temporaries(root)
        && waited_since.elapsed() < CONCURRENT_INIT_WAIT
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if root.exists() && !root.is_dir() {
        return Err(TransportError::InvalidConfig(format!(
            "{} is not a directory, so it cannot be a kanade store",
            root.display()
        )));
    }
    if header_path.exists() {
        let bytes = std::fs::read(&header_path).map_err(io_error("reading", &header_path))?;
        let header: StoreHeader = serde_json::from_slice(&bytes).map_err(|e| {
            TransportError::InvalidConfig(format!(
                "{} is not a kanade store header: {e}",
                header_path.display()
            ))
        })?;
        if header.format != FORMAT_NAME {
            return Err(TransportError::InvalidConfig(format!(
                "{} holds format {:?}, not a kanade file transport store",
                header_path.display(),
                header.format
            )));
        }
        if header.version > FORMAT_VERSION {
            return Err(TransportError::InvalidConfig(format!(
                "{} was written by a newer kanade (format version {}); this build reads version {FORMAT_VERSION} and will not touch it",
                root.display(),
                header.version
            )));
        }
        return Ok(());
    }
    let is_empty = match std::fs::read_dir(root) {
        // A header temporary left past the wait: an initialisation that
        // died; this one finishes it.
        Ok(mut entries) => entries.next().is_none() || only_header_temporaries(root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error("listing", root)(e)),
    };
    if !is_empty {
        return Err(TransportError::InvalidConfig(format!(
            "{} is not a kanade store: it is not empty and has no {STORE_FILE}; refusing to write into it",
            root.display()
        )));
    }
    create_dir_durable(root)?;
    let header = serde_json::to_vec_pretty(&StoreHeader {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
    })
    .map_err(|e| TransportError::Backend(Box::new(e)))?;
    write_atomic(&header_path, &header)
}

#[async_trait]
impl Transport for FileTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "file",
            durable: true,
            cross_process: true,
            max_payload_bytes: self.shared.settings.max_payload_bytes,
            dedup_window: Some(Duration::from_secs(7 * 24 * 3600)),
            kv_max_history: kv::MAX_HISTORY,
            kv_ttl: true,
            max_object_bytes: None,
            deterministic_time: false,
        }
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        Arc::new(log::FileLog::new(self.shared.clone()))
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        let shared = self.shared.clone();
        blocking(move || kv::FileKv::open(shared, config))
            .await
            .map(|kv| Arc::new(kv::FileKvHandle(kv)) as Arc<dyn KeyValue>)
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        let dir = self
            .shared
            .root
            .join("objects")
            .join(object::bucket_dir_name(&config.bucket)?);
        let store = object::FileObjects::open(config.bucket, dir).await?;
        Ok(Arc::new(store))
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> TransportResult<T> + Send + 'static,
) -> TransportResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransportError::Backend(Box::new(e)))?
}

/// Wall-clock now, in unix nanoseconds (the file transport is cross-process,
/// so it runs on the wall clock).
fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Checks a stream or bucket name used as a directory name.
fn check_dir_name(kind: &str, name: &str) -> TransportResult<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(TransportError::InvalidConfig(format!(
            "{kind} name {name:?} must be ASCII letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
