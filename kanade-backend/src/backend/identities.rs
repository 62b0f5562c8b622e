//! [`AgentIdentities`]: which public NKey each pc publishes with, so the
//! results projector can refuse a result published in another pc's name
//! (the rule NATS permissions cannot express; see
//! [`crate::nats_auth`] and [`kanade_core::policy::publisher`]).
//!
//! Read from the `agent-identities.json` that `kanade-backend nats-auth`
//! writes (or given in memory by an embedder). A file is re-read when it
//! changes (checked at most once a second), so `nats-auth --agent pc-9`
//! takes effect without a restart; a file that no longer parses never
//! replaces the identities in use.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use kanade_core::policy::publisher::{ProofError, PublisherIdentities};
use kanade_core::transport::Headers;

/// How often a file source is checked for changes.
const RECHECK: Duration = Duration::from_secs(1);

struct Loaded {
    identities: PublisherIdentities,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The pc → public NKey map results are checked against.
pub struct AgentIdentities {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for AgentIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentities")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Reads and parses an identities file, refusing one that group or
/// others may write (anyone who can add a line can speak for a pc).
fn read(path: &Path) -> Result<(PublisherIdentities, Option<SystemTime>), String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "{}: mode {:o} lets others rewrite who may publish results; chmod go-w it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let identities =
        PublisherIdentities::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((identities, metadata.modified().ok()))
}

impl AgentIdentities {
    /// A fixed map (embedders, tests).
    pub fn fixed(identities: PublisherIdentities) -> Self {
        Self {
            path: None,
            loaded: Mutex::new(Loaded {
                identities,
                modified: None,
                checked: Instant::now(),
            }),
        }
    }

    /// The map in `path` (`{"<pc>": "U…"}`), re-read when it changes.
    ///
    /// # Errors
    /// The file cannot be read, is not such a map, or is writable by group
    /// or others.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let (identities, modified) = read(&path)?;
        Ok(Self {
            path: Some(path),
            loaded: Mutex::new(Loaded {
                identities,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// How many pcs are known now.
    pub fn len(&self) -> usize {
        self.lock().identities.len()
    }

    /// Whether no pc is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file if it changed since the last look (at most once
    /// per [`RECHECK`]); a broken file is logged and ignored.
    fn refresh(&self, loaded: &mut Loaded) {
        let Some(path) = &self.path else { return };
        if loaded.checked.elapsed() < RECHECK {
            return;
        }
        loaded.checked = Instant::now();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == loaded.modified {
            return;
        }
        match read(path) {
            Ok((identities, modified)) => {
                tracing::info!(path = %path.display(), pcs = identities.len(), "agent identities reloaded");
                loaded.identities = identities;
                loaded.modified = modified;
            }
            Err(e) => tracing::warn!("agent identities kept, the new file is unusable: {e}"),
        }
    }

    /// Checks that `pc` published `body` on `subject` (its proof headers
    /// verify under the pc's recorded key).
    pub fn verify(
        &self,
        pc: &str,
        subject: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<(), ProofError> {
        let mut loaded = self.lock();
        self.refresh(&mut loaded);
        loaded.identities.verify(pc, subject, body, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_core::policy::publisher::PublisherSigner;

    fn write(path: &Path, ids: &PublisherIdentities) {
        std::fs::write(path, ids.to_json()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    #[test]
    fn a_changed_file_is_picked_up_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-identities.json");
        let pc1 = PublisherSigner::generate();
        let pc2 = PublisherSigner::generate();
        write(
            &path,
            &PublisherIdentities::new([("pc-1".into(), pc1.public_key().into())]),
        );
        let ids = AgentIdentities::from_file(&path).unwrap();
        let proof = pc2.sign("results.r", b"x");
        assert_eq!(
            ids.verify("pc-2", "results.r", b"x", &proof),
            Err(ProofError::UnknownPc)
        );
        write(
            &path,
            &PublisherIdentities::new([
                ("pc-1".into(), pc1.public_key().into()),
                ("pc-2".into(), pc2.public_key().into()),
            ]),
        );
        // Pretend a second passed since the last check.
        ids.lock().checked -= RECHECK;
        ids.lock().modified = None;
        assert_eq!(ids.verify("pc-2", "results.r", b"x", &proof), Ok(()));
        std::fs::write(&path, "{ broken").unwrap();
        ids.lock().checked -= RECHECK;
        ids.lock().modified = None;
        assert_eq!(ids.verify("pc-2", "results.r", b"x", &proof), Ok(()));
        assert_eq!(ids.len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = AgentIdentities::from_file(&path).unwrap_err();
        assert!(err.contains("chmod go-w"), "{err}");
    }
}
