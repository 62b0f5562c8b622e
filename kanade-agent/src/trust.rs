//! Which commands this host trusts (DESIGN §6, §10): the command-key ring
//! and the enforcement mode come from local configuration only — never
//! from the broker — and every command (and kill) is checked against them
//! before any gate runs.
//!
//! - `off`: nothing is checked (the default, as the reference).
//! - `observe`: everything runs; each change of outcome
//!   (`command_signature_ok | absent | unknown_key | invalid | stale |
//!   clock_ahead`) is reported as an `ObsEvent`.
//! - `enforce`: a command that does not verify is refused with exit 123
//!   (`skipped: false`, stderr `refused: <reason>`) without consuming its
//!   request id; a kill that does not verify is ignored and logged.
//!
//! The ring file must not be writable by group or others and must belong
//! to root or to the agent's user (Unix); otherwise an enforcing agent
//! refuses to start and an observing one warns. It is re-read when it
//! changes; a broken file never replaces a working ring.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use kanade_core::policy::signature::{
    verify_memoised, KeyRing, SignatureRefusal, VerifiedSignatures, OBS_SIGNATURE_OK,
};
use kanade_core::transport::Headers;
use serde::Deserialize;

use crate::AgentError;

/// How strictly this host checks command signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// Nothing is checked.
    #[default]
    Off,
    /// Everything runs; outcomes are reported.
    Observe,
    /// Only verified commands run (123 otherwise).
    Enforce,
}

impl FromStr for SignatureMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "off" => Ok(SignatureMode::Off),
            "observe" => Ok(SignatureMode::Observe),
            "enforce" => Ok(SignatureMode::Enforce),
            other => Err(format!(
                "unknown signature mode {other:?}: use off, observe or enforce"
            )),
        }
    }
}

/// The trust settings of an agent (local configuration only).
#[derive(Debug, Clone, Default)]
pub struct TrustSettings {
    /// Enforcement mode.
    pub mode: SignatureMode,
    /// The key-ring file (a JSON array of `{kid, public_key, label?,
    /// max_age_secs?}`, the reference's `command-keys.json`).
    pub keys_file: Option<PathBuf>,
    /// A ring given directly (embedders, tests); used when no file is set.
    pub ring: Option<KeyRing>,
    /// Where signatures that verified are remembered, so a command's
    /// replayed copy is not checked with Ed25519 again. `None`: the agent
    /// keeps its own; a simulation shares one across its agents (the
    /// verdicts are the same, see [`VerifiedSignatures`]).
    pub verified: Option<Arc<VerifiedSignatures>>,
}

/// What to do with a command or kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Run it. `report`: an outcome change to report (observe mode).
    Run { report: Option<&'static str> },
    /// Refuse it (enforce mode).
    Refuse(SignatureRefusal),
}

/// The trust state of a running agent.
pub(crate) struct Trust {
    pub mode: SignatureMode,
    keys_file: Option<PathBuf>,
    ring: RwLock<KeyRing>,
    verified: Arc<VerifiedSignatures>,
    loaded_at: Mutex<Option<FileStamp>>,
    last_outcome: Mutex<Option<&'static str>>,
}

/// Refuses a signature older than the ledger keeps request ids (whatever
/// the key's own `max_age_secs`): past it, a replayed command would no
/// longer be recognised as run.
fn within_retention(headers: &Headers, now_ms: i64) -> Result<(), SignatureRefusal> {
    let retention = crate::ledger::RETENTION.as_secs();
    let at_ms = headers
        .get(kanade_core::policy::signature::HEADER_AT)
        .and_then(|at| at.parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let age_secs = (i128::from(now_ms) - i128::from(at_ms)) / 1000;
    if age_secs > i128::from(retention) {
        return Err(SignatureRefusal::Stale {
            age_secs: i64::try_from(age_secs).unwrap_or(i64::MAX),
            max_age_secs: retention,
        });
    }
    Ok(())
}

/// Reads and checks a ring file: not a symlink, permissions and owner
/// checked on the opened handle (what is read is what was checked), then
/// the JSON.
pub fn load_ring(path: &Path) -> Result<KeyRing, String> {
    use std::io::Read;
    let link =
        std::fs::symlink_metadata(path).map_err(|e| format!("key ring {}: {e}", path.display()))?;
    if link.file_type().is_symlink() {
        return Err(format!(
            "key ring {} is a symbolic link: point the setting at the file itself",
            path.display()
        ));
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("key ring {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| format!("key ring {}: {e}", path.display()))?;
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "key ring {} is writable by group or others (mode {:o}): chmod go-w it",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "key ring {} belongs to uid {}, neither root nor this agent's user ({me})",
                path.display(),
                meta.uid()
            ));
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("key ring {}: {e}", path.display()))?;
    KeyRing::from_json(&text).map_err(|e| format!("key ring {}: {e}", path.display()))
}

/// What identifies a version of the ring file: modification time, size
/// and (Unix) inode and change time, so a replacement that keeps the
/// mtime (`cp -p`, `rsync -a`) is still noticed.
fn modified(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let extra = {
        use std::os::unix::fs::MetadataExt;
        (meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let extra = (0, 0, 0);
    Some((meta.modified().ok()?, meta.len(), extra))
}

type FileStamp = (SystemTime, u64, (u64, i64, i64));

impl Trust {
    /// The trust state `settings` describe. An enforcing agent whose ring
    /// cannot be loaded does not start; an observing one warns.
    pub fn load(settings: &TrustSettings) -> Result<Self, AgentError> {
        let ring = match (&settings.keys_file, &settings.ring) {
            (Some(path), _) => match load_ring(path) {
                Ok(ring) => ring,
                Err(reason) if settings.mode == SignatureMode::Enforce => {
                    return Err(AgentError::Config {
                        setting: "trust.keys",
                        reason,
                    })
                }
                Err(reason) => {
                    if settings.mode == SignatureMode::Observe {
                        tracing::warn!("{reason}; observing with an empty ring");
                    }
                    KeyRing::default()
                }
            },
            (None, Some(ring)) => ring.clone(),
            (None, None) => KeyRing::default(),
        };
        if settings.mode == SignatureMode::Enforce && ring.is_empty() {
            return Err(AgentError::Config {
                setting: "trust.keys",
                reason: "enforce mode needs a key ring with at least one key".into(),
            });
        }
        Ok(Self {
            mode: settings.mode,
            loaded_at: Mutex::new(settings.keys_file.as_deref().and_then(modified)),
            keys_file: settings.keys_file.clone(),
            verified: settings.verified.clone().unwrap_or_default(),
            ring: RwLock::new(ring),
            last_outcome: Mutex::new(None),
        })
    }

    /// Whether this host refuses what does not verify.
    pub fn enforcing(&self) -> bool {
        self.mode == SignatureMode::Enforce
    }

    /// The ring as loaded now (a copy; it verifies agent releases too).
    pub fn ring(&self) -> KeyRing {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls `f` with the ring's key fingerprints for heartbeats (`None`
    /// when off), borrowed under the lock rather than copied: a heartbeat
    /// serialises them in place.
    pub fn with_fingerprints<R>(&self, f: impl FnOnce(Option<&[String]>) -> R) -> R {
        if self.mode == SignatureMode::Off {
            return f(None);
        }
        // Computed when the ring was built, shared with its clones.
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        f(Some(&ring.shared_fingerprints()[..]))
    }

    /// Checks a message's signature at `now_ms`.
    pub fn check(&self, headers: &Headers, body: &[u8], now_ms: i64) -> Verdict {
        if self.mode == SignatureMode::Off {
            return Verdict::Run { report: None };
        }
        let outcome = {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            verify_memoised(&ring, headers, body, now_ms, Some(&self.verified))
                .and_then(|kid| within_retention(headers, now_ms).map(|()| kid))
        };
        let kind = match &outcome {
            Ok(_) => OBS_SIGNATURE_OK,
            Err(refusal) => refusal.obs_kind(),
        };
        match (self.mode, outcome) {
            (SignatureMode::Enforce, Err(refusal)) => Verdict::Refuse(refusal),
            (SignatureMode::Enforce, Ok(_)) => Verdict::Run { report: None },
            _ => {
                let mut last = self.last_outcome.lock().unwrap_or_else(|p| p.into_inner());
                let changed = *last != Some(kind);
                *last = Some(kind);
                Verdict::Run {
                    report: changed.then_some(kind),
                }
            }
        }
    }

    /// Re-reads the ring file when it changed; keeps the working ring when
    /// the new file is broken or insecure.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.keys_file else {
            return;
        };
        let now = modified(path);
        {
            let mut loaded = self.loaded_at.lock().unwrap_or_else(|p| p.into_inner());
            if *loaded == now {
                return;
            }
            *loaded = now;
        }
        match load_ring(path) {
            Ok(ring) if !(ring.is_empty() && self.enforcing()) => {
                tracing::info!(keys = ?ring.shared_fingerprints(), "command key ring reloaded");
                *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
            }
            Ok(_) => tracing::error!("the new key ring is empty; keeping the working ring"),
            Err(reason) => tracing::error!("{reason}; keeping the working ring"),
        }
    }
}

/// Watches the ring file (every 2 s) while the agent runs; only started
/// when a file is configured.
pub(crate) async fn watch_ring(trust: Arc<Trust>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        trust.reload_if_changed();
    }
}
