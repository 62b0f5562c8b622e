//! Self-update (I/O edge of `kanade_core::policy::release`): follows the
//! layered `target_version`, installs a verified release next to the
//! running binary, and keeps the boot sentinel's records.
//!
//! Files, next to the executable `E`: `E.new` (the download, written and
//! synced before it replaces `E` with one rename) and `E.last-good` (a
//! copy of the binary that ran before the update: what a rollback
//! restores). In the state directory, `update/pending.json` (the
//! installed version until it confirms a healthy start, with its start
//! count) and `update/quarantine.json` (versions rolled back on this host,
//! never installed again here; reported in heartbeats).
//!
//! Only the `kanade-agent` binary turns this on
//! ([`AgentSettings::self_update`](crate::AgentSettings::self_update)):
//! an embedding service updates itself however it ships.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kanade_core::names::OBJECT_AGENT_RELEASES;
use kanade_core::policy::release::{
    binary_object, boot_verdict, check_binary, release_object, verify_release, wanted_version,
    BootVerdict, PendingUpdate, ReleaseRefusal, SignedRelease,
};
use kanade_core::transport::ext::ObjectStoreExt;
use kanade_core::transport::ObjectStoreConfig;

use crate::state::Inner;

/// How long a new version runs connected before it counts as started
/// healthy (and its pending record is removed).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Largest release body an agent downloads (the manifest names the size;
/// this bounds what a broken store could make it read).
pub const MAX_RELEASE_BYTES: u64 = 512 * 1024 * 1024;

/// How long after a failed download or a refused release the agent tries
/// the same target again (a config change retries at once).
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Where the running binary is and which platform's releases it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfUpdate {
    /// The agent's executable, replaced by an update.
    pub executable: PathBuf,
    /// `<os>-<arch>` (`kanade_core::policy::release::platform()`).
    pub platform: String,
}

/// `E.new`.
pub fn new_path(executable: &Path) -> PathBuf {
    with_suffix(executable, ".new")
}

/// `E.last-good`.
pub fn last_good_path(executable: &Path) -> PathBuf {
    with_suffix(executable, ".last-good")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn pending_path(state_dir: &Path) -> PathBuf {
    state_dir.join("update").join("pending.json")
}

fn quarantine_path(state_dir: &Path) -> PathBuf {
    state_dir.join("update").join("quarantine.json")
}

/// The pending update record, if any (an unreadable one counts as none).
pub fn read_pending(state_dir: &Path) -> Option<PendingUpdate> {
    let text = std::fs::read(pending_path(state_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Versions quarantined on this host, in the order they failed.
pub fn quarantined(state_dir: &Path) -> Vec<String> {
    std::fs::read(quarantine_path(state_dir))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

/// Writes `bytes` to `path` durably with permissions `mode` (creating the
/// directory first).
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::state_files::write_durably_with_mode(path, bytes, Some(mode))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomically(path, &text, 0o600)
}

/// What the boot sentinel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCheck {
    /// No update waits for confirmation.
    NothingPending,
    /// The new version starts again (this is start `boots`).
    Starting {
        /// The version.
        version: String,
        /// Its starts so far, this one included.
        boots: u32,
    },
    /// The new version never started healthy: the previous binary was
    /// restored and the version quarantined.
    RolledBack {
        /// The version that failed.
        version: String,
        /// The version restored.
        previous: String,
    },
}

/// The boot sentinel, run before every start of the agent by the service
/// manager (`kanade-agent boot-check`, from the `.last-good` binary, which
/// runs even when the new one cannot): counts the new version's starts
/// and, past [`MAX_FAILED_BOOTS`](kanade_core::policy::release::MAX_FAILED_BOOTS),
/// restores `E.last-good` over `E` and quarantines the version.
///
/// # Errors
/// A record or the binary could not be written (the message says which).
pub fn boot_check(state_dir: &Path, executable: &Path) -> Result<BootCheck, String> {
    match boot_verdict(read_pending(state_dir)) {
        BootVerdict::NothingPending => Ok(BootCheck::NothingPending),
        BootVerdict::Start(pending) => {
            write_json(&pending_path(state_dir), &pending)
                .map_err(|e| format!("writing {}: {e}", pending_path(state_dir).display()))?;
            Ok(BootCheck::Starting {
                version: pending.version,
                boots: pending.boots,
            })
        }
        BootVerdict::RollBack { version, previous } => {
            let last_good = last_good_path(executable);
            let body = std::fs::read(&last_good)
                .map_err(|e| format!("reading {}: {e}", last_good.display()))?;
            write_atomically(executable, &body, 0o755)
                .map_err(|e| format!("restoring {}: {e}", executable.display()))?;
            let mut list = quarantined(state_dir);
            if !list.contains(&version) {
                list.push(version.clone());
            }
            write_json(&quarantine_path(state_dir), &list)
                .map_err(|e| format!("writing the quarantine: {e}"))?;
            std::fs::remove_file(pending_path(state_dir))
                .map_err(|e| format!("removing the pending record: {e}"))?;
            Ok(BootCheck::RolledBack { version, previous })
        }
    }
}

/// Why an install did not happen.
#[derive(Debug)]
enum InstallError {
    /// The release is refused (reported as an ObsEvent).
    Refused(ReleaseRefusal),
    /// It could not be fetched or written (tried again later).
    Failed(String),
}

impl From<ReleaseRefusal> for InstallError {
    fn from(refusal: ReleaseRefusal) -> Self {
        Self::Refused(refusal)
    }
}

/// Reads at most `limit` bytes of object `name` from the releases store.
async fn fetch(inner: &Arc<Inner>, name: &str, limit: u64) -> Result<Vec<u8>, InstallError> {
    let store = inner
        .transport
        .object_store(ObjectStoreConfig::new(OBJECT_AGENT_RELEASES))
        .await
        .map_err(|e| InstallError::Failed(format!("releases store: {e}")))?;
    store
        .get_bytes(name, limit)
        .await
        .map_err(|e| InstallError::Failed(format!("fetching {name}: {e}")))
}

/// Downloads, verifies and installs `version`; after it returns `Ok`, the
/// next start of `E` runs the new binary.
async fn install(
    inner: &Arc<Inner>,
    update: &SelfUpdate,
    version: &str,
) -> Result<(), InstallError> {
    let text = fetch(inner, &release_object(&update.platform, version), 64 * 1024).await?;
    let signed: SignedRelease = serde_json::from_slice(&text)
        .map_err(|e| ReleaseRefusal::Malformed(format!("release description: {e}")))?;
    let manifest = verify_release(&inner.trust.ring(), &signed, version, &update.platform)?;
    let limit = manifest.size.min(MAX_RELEASE_BYTES) + 1;
    let body = fetch(inner, &binary_object(&update.platform, version), limit).await?;
    check_binary(&manifest, &body)?;
    let executable = update.executable.clone();
    let state_dir = inner.settings.state_dir.clone();
    let pending = PendingUpdate {
        version: version.to_owned(),
        previous: inner.settings.agent_version.clone(),
        boots: 0,
    };
    tokio::task::spawn_blocking(move || swap(&executable, &state_dir, &body, &pending))
        .await
        .map_err(|e| InstallError::Failed(format!("install task: {e}")))?
        .map_err(InstallError::Failed)
}

/// `E.new` written, `E` copied to `E.last-good`, the pending record
/// written, then `E.new` renamed over `E` (one atomic step: `E` is always
/// a whole binary).
fn swap(
    executable: &Path,
    state_dir: &Path,
    body: &[u8],
    pending: &PendingUpdate,
) -> Result<(), String> {
    let new = new_path(executable);
    write_atomically(&new, body, 0o755).map_err(|e| format!("writing {}: {e}", new.display()))?;
    let current =
        std::fs::read(executable).map_err(|e| format!("reading {}: {e}", executable.display()))?;
    let last_good = last_good_path(executable);
    write_atomically(&last_good, &current, 0o755)
        .map_err(|e| format!("writing {}: {e}", last_good.display()))?;
    write_json(&pending_path(state_dir), pending)
        .map_err(|e| format!("writing the pending record: {e}"))?;
    std::fs::rename(&new, executable)
        .map_err(|e| format!("replacing {}: {e}", executable.display()))?;
    crate::state_files::sync_dir(executable.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("syncing {}: {e}", executable.display()))
}

/// A random wait in `0..jitter` (humantime; malformed: no wait).
fn jitter_wait(inner: &Inner, jitter: &str) -> Duration {
    let max = humantime::parse_duration(jitter).unwrap_or_default();
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    let mut rng = inner.rng.lock().unwrap_or_else(|p| p.into_inner());
    Duration::from_millis(rng.u64(0..millis))
}

/// Follows the live config's `target_version`; installs a wanted version
/// after its jitter and reports it through `update_installed` (the agent
/// then stops, for its service manager to start the new binary). A refused
/// release is reported as an ObsEvent and not tried again until the config
/// changes or [`RETRY_AFTER`] passes.
pub(crate) async fn update_loop(inner: Arc<Inner>) {
    let Some(update) = inner.settings.self_update.clone() else {
        return;
    };
    loop {
        let changed = inner.live_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (target, jitter) = {
            let live = inner.live();
            (
                live.config.target_version.clone(),
                live.config.target_version_jitter.clone(),
            )
        };
        // One update at a time: an installed version confirms its start
        // (or is rolled back) before another is installed over it.
        if read_pending(&inner.settings.state_dir).is_some() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = changed.as_mut() => {}
            }
            continue;
        }
        let quarantine = quarantined(&inner.settings.state_dir);
        let Some(version) = wanted_version(
            &inner.settings.agent_version,
            target.as_deref(),
            &quarantine,
        ) else {
            changed.await;
            continue;
        };
        let wait = jitter_wait(&inner, &jitter);
        tracing::info!(
            version,
            running = inner.settings.agent_version,
            "update wanted; installing in {}",
            humantime::format_duration(wait)
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.as_mut() => continue,
        }
        match install(&inner, &update, &version).await {
            Ok(()) => {
                tracing::info!(
                    version,
                    "update installed; stopping for the service manager to start it"
                );
                inner.update_installed.send_replace(Some(version));
                return;
            }
            Err(InstallError::Refused(refusal)) => {
                tracing::warn!(version, "update refused: {refusal}");
                crate::report::publish_obs(
                    &inner,
                    refusal.obs_kind(),
                    serde_json::json!({"version": version, "reason": refusal.to_string()}),
                )
                .await;
            }
            Err(InstallError::Failed(reason)) => {
                tracing::warn!(version, "update not installed: {reason}");
            }
        }
        let changed = inner.live_changed.notified();
        tokio::select! {
            () = tokio::time::sleep(RETRY_AFTER) => {}
            () = changed => {}
        }
    }
}

/// Confirms a just-installed version once it has run [`HEALTHY_AFTER`]
/// connected: removes the pending record, so the sentinel stops counting.
/// A binary that reports another version than the one installed never
/// confirms: its starts count as failed ones, and the sentinel rolls it
/// back (a release whose published version is not the one it reports, or
/// an install cut short before the swap, end the same way).
pub(crate) async fn confirm_when_healthy(inner: Arc<Inner>) {
    let dir = inner.settings.state_dir.clone();
    let Some(pending) = read_pending(&dir) else {
        return;
    };
    if pending.version != inner.settings.agent_version {
        tracing::warn!(
            pending = pending.version,
            running = inner.settings.agent_version,
            starts = pending.boots,
            "this binary is not the version installed: not confirmed (the boot sentinel rolls it back)"
        );
        return;
    }
    if let Some(mut connected) = inner.connected.clone() {
        if connected.wait_for(|c| *c).await.is_err() {
            return;
        }
    }
    tokio::time::sleep(HEALTHY_AFTER).await;
    // Only the record confirmed: never one written since.
    if read_pending(&dir).as_ref() != Some(&pending) {
        return;
    }
    if let Err(e) = std::fs::remove_file(pending_path(&dir)) {
        tracing::warn!("pending update record not removed: {e}");
        return;
    }
    tracing::info!(
        version = pending.version,
        previous = pending.previous,
        starts = pending.boots,
        "update confirmed: this version started healthy"
    );
}
