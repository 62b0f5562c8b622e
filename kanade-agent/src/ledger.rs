//! The admission ledger: one small file per request id under
//! `<state>/ledger/`, so a request runs at most once across live delivery,
//! replay and restarts.
//!
//! States: `pending` (admitted, waiting for jitter / a slot) → `launching`
//! (about to run or running) → `finished`. Entries are kept 8 days and at
//! most [`MAX_ENTRIES`]; on start, `launching` entries are reported as exit
//! 121 (outcome unknown) and `pending` ones are resumed from the stored
//! command (the gates decide afresh).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state_files::{DiskFiles, StateFiles};
use crate::AgentError;

/// How long finished entries are kept.
pub const RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);
/// Most entries kept; the oldest finished ones go first.
pub const MAX_ENTRIES: usize = 100_000;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Admitted, not started.
    Pending,
    /// Started (or about to).
    Launching,
    /// A result was written to the outbox.
    Finished,
}

/// One request's ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The request id.
    pub request_id: String,
    /// sha256 of the command bytes as received.
    pub command_sha256: String,
    /// Stage.
    pub stage: Stage,
    /// When it was admitted.
    #[serde(with = "kanade_core::wire::timestamp")]
    pub admitted_at: DateTime<Utc>,
    /// Execution id, for the 121 report.
    pub exec_id: Option<String>,
    /// Job id, for the 121 report.
    pub manifest_id: Option<String>,
    /// The command as received, so admitted work that had not started is
    /// resumed after a restart; kept while the entry is `pending` only.
    #[serde(default)]
    pub command: Option<String>,
    /// Its signature headers as received (`Kanade-Sig*`), so work resumed
    /// after a restart is checked again against the host's trust then;
    /// kept while the entry is `pending` only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub signature: std::collections::BTreeMap<String, String>,
}

/// A request to admit (see [`Ledger::admit`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEntry {
    /// The request id (a safe token).
    pub request_id: String,
    /// sha256 of the command bytes as received.
    pub command_sha256: String,
    /// Execution id.
    pub exec_id: Option<String>,
    /// Job id.
    pub manifest_id: Option<String>,
    /// The command as received.
    pub command: Option<String>,
    /// Its `Kanade-Sig*` headers.
    pub signature: std::collections::BTreeMap<String, String>,
}

/// The outcome of [`Ledger::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// New: run it.
    Admitted,
    /// Seen before with the same bytes: ignore.
    Duplicate,
    /// Seen before with different bytes: refuse and report.
    Conflict {
        /// The digest recorded first.
        recorded: String,
    },
}

/// The on-disk ledger with an in-memory index.
#[derive(Debug)]
pub struct Ledger {
    files: Arc<dyn StateFiles>,
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` on the local disk, dropping
    /// expired entries.
    pub fn open(dir: &Path, now: DateTime<Utc>) -> Result<Self, AgentError> {
        Self::open_in(Arc::new(DiskFiles), dir, now)
    }

    /// Opens (or creates) the ledger in `dir` of `files`, dropping expired
    /// entries.
    pub fn open_in(
        files: Arc<dyn StateFiles>,
        dir: &Path,
        now: DateTime<Utc>,
    ) -> Result<Self, AgentError> {
        files
            .create_dir_all(dir)
            .map_err(|e| AgentError::io("creating ledger", dir, e))?;
        if let Ok(removed @ 1..) = files.remove_temporaries(dir) {
            tracing::warn!(
                removed,
                "half-written ledger entries removed (a crash mid-write)"
            );
        }
        let mut entries = HashMap::new();
        for path in files
            .list(dir)
            .map_err(|e| AgentError::io("listing ledger", dir, e))?
        {
            let parsed = files
                .read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
            match parsed {
                Some(entry) if !expired(&entry, now) => {
                    entries.insert(entry.request_id.clone(), entry);
                }
                Some(_) => {
                    let _ = files.remove(&path);
                }
                None => {
                    tracing::warn!(path = %path.display(), "unreadable ledger entry removed");
                    let _ = files.remove(&path);
                }
            }
        }
        let ledger = Self {
            files,
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
        };
        ledger.enforce_bound();
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, request_id: &str) -> PathBuf {
        self.dir.join(format!("{request_id}.json"))
    }

    fn save(&self, entry: &Entry) -> Result<(), AgentError> {
        let bytes = encode(entry)?;
        self.write_entry(&entry.request_id, &bytes)
    }

    /// Writes an encoded entry to its file (synced).
    fn write_entry(&self, request_id: &str, bytes: &[u8]) -> Result<(), AgentError> {
        let path = self.path(request_id);
        self.files
            .write(&path, bytes, true)
            .map_err(|e| AgentError::io("writing", &path, e))
    }

    /// What admitting `request_id` with these command bytes would answer
    /// when it is already recorded: [`Admission::Duplicate`] or
    /// [`Admission::Conflict`]; `None` when it is new. A cheap look before
    /// building a [`NewEntry`] (every command arrives twice, live and
    /// replayed); [`Ledger::admit`] decides again under its lock.
    pub fn recorded(&self, request_id: &str, command_sha256: &str) -> Option<Admission> {
        self.lock()
            .get(request_id)
            .map(|existing| known_admission(existing, command_sha256))
    }

    /// Records a new request, atomically with respect to other deliveries.
    /// `request_id` must already be a safe token (it names a file).
    pub fn admit(&self, new: NewEntry, now: DateTime<Utc>) -> Result<Admission, AgentError> {
        let NewEntry {
            request_id,
            command_sha256,
            exec_id,
            manifest_id,
            command,
            signature,
        } = new;
        let (request_id, command_sha256) = (request_id.as_str(), command_sha256.as_str());
        let mut entries = self.lock();
        if let Some(existing) = entries.get(request_id) {
            return Ok(known_admission(existing, command_sha256));
        }
        let entry = Entry {
            request_id: request_id.to_owned(),
            command_sha256: command_sha256.to_owned(),
            stage: Stage::Pending,
            admitted_at: now,
            exec_id,
            manifest_id,
            command,
            signature,
        };
        self.save(&entry)?;
        entries.insert(request_id.to_owned(), entry);
        drop(entries);
        self.enforce_bound();
        Ok(Admission::Admitted)
    }

    /// When `request_id` was admitted, if it is recorded.
    pub fn admitted_at(&self, request_id: &str) -> Option<DateTime<Utc>> {
        self.lock().get(request_id).map(|e| e.admitted_at)
    }

    /// Whether `request_id` is recorded (in any stage).
    pub fn contains(&self, request_id: &str) -> bool {
        self.lock().contains_key(request_id)
    }

    /// Moves a request to `stage`. Past `pending` the stored command and
    /// its signature are dropped: only a pending entry is ever resumed
    /// from them (a `launching` one is reported as exit 121 from its ids),
    /// so a day of finished requests costs a few hundred bytes each, not
    /// a copy of every script.
    pub fn set_stage(&self, request_id: &str, stage: Stage) -> Result<(), AgentError> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(request_id) else {
            return Ok(());
        };
        entry.stage = stage;
        if stage != Stage::Pending {
            entry.command = None;
            entry.signature.clear();
        }
        let bytes = encode(entry)?;
        drop(entries);
        self.write_entry(request_id, &bytes)
    }

    /// Entries in `stage`.
    pub fn in_stage(&self, stage: Stage) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .lock()
            .values()
            .filter(|e| e.stage == stage)
            .cloned()
            .collect();
        // Oldest first (then by id), so recovery is deterministic.
        entries.sort_by(|a, b| (a.admitted_at, &a.request_id).cmp(&(b.admitted_at, &b.request_id)));
        entries
    }

    /// Forgets a request (its id may be admitted again).
    pub fn forget(&self, request_id: &str) {
        self.lock().remove(request_id);
        let _ = self.files.remove(&self.path(request_id));
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn enforce_bound(&self) {
        let mut entries = self.lock();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        let mut finished: Vec<(DateTime<Utc>, String)> = entries
            .values()
            .filter(|e| e.stage == Stage::Finished)
            .map(|e| (e.admitted_at, e.request_id.clone()))
            .collect();
        finished.sort();
        let excess = entries.len() - MAX_ENTRIES;
        for (_, id) in finished.into_iter().take(excess) {
            entries.remove(&id);
            let _ = self.files.remove(&self.path(&id));
        }
    }
}

/// The answer to a delivery of an already recorded request: the same
/// command bytes are a duplicate, others a conflict.
fn known_admission(existing: &Entry, command_sha256: &str) -> Admission {
    if existing.command_sha256 == command_sha256 {
        Admission::Duplicate
    } else {
        Admission::Conflict {
            recorded: existing.command_sha256.clone(),
        }
    }
}

/// An entry as the JSON its file holds.
fn encode(entry: &Entry) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(entry).map_err(|e| AgentError::encode("ledger entry", e))
}

fn expired(entry: &Entry, now: DateTime<Utc>) -> bool {
    entry.stage == Stage::Finished
        && (now - entry.admitted_at)
            .to_std()
            .is_ok_and(|age| age > RETENTION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_files::MemoryFiles;

    fn admit(ledger: &Ledger, request_id: &str, now: DateTime<Utc>) {
        let new = NewEntry {
            request_id: request_id.into(),
            command_sha256: format!("sha-{request_id}"),
            exec_id: Some("exec-1".into()),
            manifest_id: Some("job".into()),
            command: Some(r#"{"script":"echo \"hi\""}"#.into()),
            signature: [("Kanade-Sig".to_owned(), "sig".to_owned())].into(),
        };
        assert_eq!(ledger.admit(new, now).expect("admit"), Admission::Admitted);
    }

    #[test]
    fn a_recorded_request_answers_as_admit_would() {
        let files = Arc::new(MemoryFiles::default());
        let now = Utc::now();
        let ledger = Ledger::open_in(files, Path::new("/state/ledger"), now).expect("open");
        assert_eq!(ledger.recorded("r-1", "sha-r-1"), None, "not yet recorded");
        admit(&ledger, "r-1", now);
        for sha in ["sha-r-1", "sha-other"] {
            let again = NewEntry {
                request_id: "r-1".into(),
                command_sha256: sha.into(),
                exec_id: None,
                manifest_id: None,
                command: None,
                signature: Default::default(),
            };
            let looked = ledger.recorded("r-1", sha);
            assert!(looked.is_some());
            assert_eq!(looked, ledger.admit(again, now).ok());
        }
        assert_eq!(
            ledger.recorded("r-1", "sha-other"),
            Some(Admission::Conflict {
                recorded: "sha-r-1".into()
            })
        );
        assert_eq!(
            ledger.recorded("r-1", "sha-r-1"),
            Some(Admission::Duplicate)
        );
    }

    #[test]
    fn only_pending_entries_keep_their_command_and_signature() {
        let files = Arc::new(MemoryFiles::default());
        let dir = Path::new("/state/ledger");
        let now = Utc::now();
        let ledger = Ledger::open_in(files.clone(), dir, now).expect("open");
        for id in ["r-pending", "r-launching", "r-finished"] {
            admit(&ledger, id, now);
        }
        ledger
            .set_stage("r-launching", Stage::Launching)
            .expect("stage");
        ledger
            .set_stage("r-finished", Stage::Launching)
            .expect("stage");
        ledger
            .set_stage("r-finished", Stage::Finished)
            .expect("stage");
        // What is on file is what a restarted agent finds.
        let reopened = Ledger::open_in(files, dir, now).expect("reopen");
        for ledger in [&ledger, &reopened] {
            let pending = ledger.in_stage(Stage::Pending);
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].request_id, "r-pending");
            assert!(pending[0]
                .command
                .as_deref()
                .is_some_and(|c| c.contains("echo")));
            assert_eq!(pending[0].signature.len(), 1);
            for stage in [Stage::Launching, Stage::Finished] {
                let moved = ledger.in_stage(stage);
                assert_eq!(moved.len(), 1, "{stage:?}");
                let entry = &moved[0];
                assert_eq!(entry.command, None);
                assert!(entry.signature.is_empty());
                // What a 121 report and duplicate detection need stays.
                assert_eq!(entry.exec_id.as_deref(), Some("exec-1"));
                assert_eq!(entry.manifest_id.as_deref(), Some("job"));
                assert_eq!(entry.command_sha256, format!("sha-{}", entry.request_id));
                assert_eq!(entry.admitted_at, now);
            }
        }
        // A redelivery of a moved-on request is still a duplicate.
        let again = NewEntry {
            request_id: "r-finished".into(),
            command_sha256: "sha-r-finished".into(),
            ..NewEntry::default()
        };
        assert_eq!(
            reopened.admit(again, now).expect("admit"),
            Admission::Duplicate
        );
    }
}
