//! The outbox: a message is written to disk (fsynced; see
//! [`crate::state_files`]) before it is
//! published and removed only once the transport acknowledged it. The
//! backlog is published oldest first on start and by a drain loop, with a
//! per-file backoff; a file that keeps failing is moved to `stuck/` with a
//! warning instead of blocking the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kanade_core::policy::publisher::PublisherSigner;
use kanade_core::transport::{MessageLog, MESSAGE_ID_HEADER};
use serde::{Deserialize, Serialize};

use crate::state_files::{DiskFiles, StateFiles};
use crate::AgentError;

/// Failures after which a still-unpublished file is reported in the log.
pub const MAX_FAILURES: u32 = 20;

/// One message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Subject to publish on.
    pub subject: String,
    /// Message id for broker-side dedup (the result id).
    pub message_id: String,
    /// The JSON payload.
    pub payload: String,
}

/// The on-disk outbox.
pub struct Outbox {
    files: Arc<dyn StateFiles>,
    dir: PathBuf,
    stuck: PathBuf,
    log: Arc<dyn MessageLog>,
    counter: AtomicU64,
    failures: Mutex<HashMap<PathBuf, (u32, tokio::time::Instant)>>,
    /// Whether the directory may hold unpublished files: set at open, on
    /// every write and every failed or deferred publish; cleared when a
    /// drain starts. An idle agent's drain loop then touches no files.
    maybe_pending: AtomicBool,
    /// Signalled whenever `maybe_pending` is set.
    backlog_appeared: tokio::sync::Notify,
    /// Proves each publish came from this agent's identity.
    signer: Option<PublisherSigner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens the outbox in `dir` on the local disk.
    pub fn open(dir: &Path, log: Arc<dyn MessageLog>) -> Result<Self, AgentError> {
        Self::open_in(Arc::new(DiskFiles), dir, log)
    }

    /// Opens the outbox in `dir` of `files`.
    pub fn open_in(
        files: Arc<dyn StateFiles>,
        dir: &Path,
        log: Arc<dyn MessageLog>,
    ) -> Result<Self, AgentError> {
        let stuck = dir.join("stuck");
        files
            .create_dir_all(&stuck)
            .map_err(|e| AgentError::io("creating outbox", &stuck, e))?;
        // A message half-written at a crash was never published nor
        // acknowledged to anyone: its run is redone or reported from the
        // ledger.
        let _ = files.remove_temporaries(dir);
        Ok(Self {
            files,
            dir: dir.to_path_buf(),
            stuck,
            log,
            counter: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            maybe_pending: AtomicBool::new(true),
            backlog_appeared: tokio::sync::Notify::new(),
            signer: None,
        })
    }

    /// Signs every publish with the agent's NATS identity (publisher
    /// proofs, DESIGN §10), so the backend can refuse a result published
    /// in another pc's name.
    pub fn with_signer(mut self, signer: Option<PublisherSigner>) -> Self {
        self.signer = signer;
        self
    }

    /// Writes `entry` durably, then tries to publish it at once.
    pub async fn send(&self, entry: OutboxEntry) -> Result<(), AgentError> {
        let path = self.persist(&entry)?;
        self.publish_entry(&path, entry).await;
        Ok(())
    }

    /// Writes `entry` durably and returns its file (publish it with
    /// [`Outbox::publish_now`]).
    pub fn persist(&self, entry: &OutboxEntry) -> Result<PathBuf, AgentError> {
        let name = format!(
            "{:020}-{:06}.json",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            self.counter.fetch_add(1, Ordering::Relaxed) % 1_000_000
        );
        let path = self.dir.join(name);
        let bytes = serde_json::to_vec(entry).map_err(|e| AgentError::encode("outbox entry", e))?;
        self.files
            .write(&path, &bytes, true)
            .map_err(|e| AgentError::io("writing", &path, e))?;
        self.mark_pending();
        Ok(path)
    }

    /// Tries to publish a persisted file now; on failure the drain loop retries.
    pub async fn publish_now(&self, path: &Path) {
        self.publish_file(path).await;
    }

    /// [`Outbox::publish_now`] of the entry just persisted at `path`, without
    /// reading it back.
    pub async fn publish_persisted(&self, path: &Path, entry: OutboxEntry) {
        self.publish_entry(path, entry).await;
    }

    /// Whether a message for `subject` is still waiting.
    pub fn has_pending(&self, subject: &str) -> bool {
        self.backlog().iter().any(|path| {
            self.files
                .read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<OutboxEntry>(&b).ok())
                .is_some_and(|e| e.subject == subject)
        })
    }

    /// Files waiting, oldest first.
    pub fn backlog(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .files
            .list(&self.dir)
            .map(|paths| {
                paths
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Files moved aside after repeated failures.
    pub fn stuck(&self) -> Vec<PathBuf> {
        self.files.list(&self.stuck).unwrap_or_default()
    }

    /// Forgets every file's backoff so the next drain tries them all: the
    /// agent calls it when its connection comes back, so a result that
    /// failed during an outage goes out on reconnect instead of up to a
    /// minute later.
    pub fn retry_now(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.mark_pending();
    }

    fn mark_pending(&self) {
        self.maybe_pending.store(true, Ordering::SeqCst);
        self.backlog_appeared.notify_one();
    }

    /// Returns once the outbox may hold unpublished files (at once after
    /// open, a write or a failed publish), so an idle drain loop sleeps
    /// instead of polling.
    pub async fn wait_for_backlog(&self) {
        while !self.maybe_pending.load(Ordering::SeqCst) {
            self.backlog_appeared.notified().await;
        }
    }

    /// Publishes every backlog file whose backoff has passed, oldest first.
    pub async fn drain(&self) {
        if !self.maybe_pending.swap(false, Ordering::SeqCst) {
            return;
        }
        for path in self.backlog() {
            let due = self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&path)
                .is_none_or(|(_, next)| *next <= tokio::time::Instant::now());
            if !due || !self.publish_file(&path).await {
                self.mark_pending();
            }
        }
    }

    /// Publishes one file; on success removes it, on failure backs off.
    async fn publish_file(&self, path: &Path) -> bool {
        let entry = match self
            .files
            .read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<OutboxEntry>(&b).ok())
        {
            Some(entry) => entry,
            None => {
                self.move_aside(path, "unreadable outbox file");
                return false;
            }
        };
        self.publish_entry(path, entry).await
    }

    /// Publishes `entry`, persisted at `path`; on success removes the file,
    /// on failure backs off.
    async fn publish_entry(&self, path: &Path, entry: OutboxEntry) -> bool {
        let mut headers = self
            .signer
            .as_ref()
            .map(|signer| signer.sign(&entry.subject, entry.payload.as_bytes()))
            .unwrap_or_default();
        headers.insert(MESSAGE_ID_HEADER.to_owned(), entry.message_id.clone());
        let result = self
            .log
            .publish(
                &entry.subject,
                headers,
                Bytes::from(entry.payload.into_bytes()),
            )
            .await;
        match result {
            Ok(_) => {
                let _ = self.files.remove(path);
                self.failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(path);
                true
            }
            Err(e) => {
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                let count = failures.get(path).map_or(0, |(n, _)| *n) + 1;
                // Only a message the transport can never take is moved aside;
                // retryable failures (an outage) wait as long as it takes.
                if !e.is_retryable() {
                    failures.remove(path);
                    drop(failures);
                    self.move_aside(path, &e.to_string());
                } else {
                    let backoff = Duration::from_millis(250 * (1u64 << count.min(8)));
                    if count == MAX_FAILURES {
                        tracing::warn!(path = %path.display(), error = %e, "result still not published after {count} tries; retrying");
                    }
                    failures.insert(
                        path.to_path_buf(),
                        (count, tokio::time::Instant::now() + backoff),
                    );
                    tracing::debug!(path = %path.display(), error = %e, "publish failed; will retry");
                }
                false
            }
        }
    }

    fn move_aside(&self, path: &Path, why: &str) {
        let target = self.stuck.join(path.file_name().unwrap_or_default());
        tracing::warn!(path = %path.display(), reason = why, "outbox file moved to stuck/");
        let _ = self.files.rename(path, &target);
    }
}
