//! Versions and pins: a version's content is immutable once applied (a
//! changed job needs a new version, or an explicit replace the API audits),
//! a pin names a version that was applied and holds until it is cleared.

use bytes::Bytes;
use kanade_core::names::{BUCKET_JOBS, BUCKET_SCRIPT_CURRENT, OBJECT_SCRIPTS};
use kanade_core::transport::ext::KeyValueExt;
use kanade_core::transport::{ObjectStoreConfig, TransportError};

use super::core::Backend;
use super::error::BackendError;
use crate::db::Pin;
use crate::manifest::Job;

/// What applying a job did.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedJob {
    /// The job as stored.
    pub job: Job,
    /// The same version was applied before with other content, and replaced.
    pub replaced: bool,
    /// The job is pinned at this other version: agents keep running it
    /// (and skip this one with 124) until the pin is cleared or moved.
    pub pinned: Option<String>,
}

/// Whether re-applying a version changes it (pure): the stored job of the
/// same version differs, or the stored script body's digest does.
pub fn version_changed(
    stored: Option<&Job>,
    new: &Job,
    stored_script_sha256: Option<&str>,
    new_script_sha256: Option<&str>,
) -> bool {
    let manifest_changed = stored.is_some_and(|s| s.version == new.version && s != new);
    let script_changed = match (stored_script_sha256, new_script_sha256) {
        (Some(old), Some(new)) => old != new,
        _ => false,
    };
    manifest_changed || script_changed
}

impl Backend {
    /// The digest of the stored script of `key` (`<id>/<version>`), if any.
    pub(super) async fn stored_script_sha256(
        &self,
        key: &str,
    ) -> Result<Option<String>, BackendError> {
        let store = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
            .await?;
        match store.info(key).await {
            Ok(info) => Ok(Some(info.sha256)),
            Err(TransportError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored job `id`, if any.
    pub(super) async fn stored_job(&self, id: &str) -> Result<Option<Job>, BackendError> {
        self.bucket(BUCKET_JOBS)
            .await?
            .get_json(id)
            .await
            .map_err(|e| BackendError::Invalid(format!("stored job {id} unreadable: {e}")))
    }

    /// The operator pin of `job_id`, if any.
    pub async fn pin_of(&self, job_id: &str) -> Result<Option<Pin>, BackendError> {
        let db = self.db.clone();
        let id = job_id.to_owned();
        self.run_db(move || db.pin(&id)).await
    }

    /// Pins the version agents may run (others are skipped with 124) until
    /// [`Backend::unpin`]; applying a newer version does not move it.
    ///
    /// # Errors
    /// The job is unknown, or `version` was never applied.
    pub async fn pin(&self, job_id: &str, version: &str) -> Result<(), BackendError> {
        let job = self.job(job_id).await?;
        let known = job.version == version
            || self
                .stored_script_sha256(&format!("{job_id}/{version}"))
                .await?
                .is_some();
        if !known {
            return Err(BackendError::Invalid(format!(
                "job {job_id} has no version {version:?} (the current one is {}): apply it before pinning it",
                job.version
            )));
        }
        let pin = Pin {
            job_id: job_id.to_owned(),
            version: version.to_owned(),
            pinned_at: self.now().to_rfc3339(),
        };
        let db = self.db.clone();
        self.run_db(move || db.set_pin(&pin)).await?;
        self.bucket(BUCKET_SCRIPT_CURRENT)
            .await?
            .put(job_id, Bytes::from(version.to_owned()))
            .await?;
        Ok(())
    }

    /// Clears a pin: the job's current (latest applied) version runs
    /// again. Returns that version.
    pub async fn unpin(&self, job_id: &str) -> Result<String, BackendError> {
        let job = self.job(job_id).await?;
        let db = self.db.clone();
        let id = job_id.to_owned();
        self.run_db(move || db.clear_pin(&id)).await?;
        self.bucket(BUCKET_SCRIPT_CURRENT)
            .await?
            .put(job_id, Bytes::from(job.version.clone()))
            .await?;
        Ok(job.version)
    }

    /// Refuses an exec of `job` while a pin holds it at another version
    /// (every agent would skip it with 124).
    pub(super) async fn refuse_if_pinned_elsewhere(&self, job: &Job) -> Result<(), BackendError> {
        match self.pin_of(&job.id).await? {
            Some(pin) if pin.version != job.version => Err(BackendError::Invalid(format!(
                "job {} is pinned to {}: agents would skip {} (124); `kanade pin {} {}` or `kanade unpin {}` first",
                job.id, pin.version, job.version, job.id, job.version, job.id
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(version: &str, timeout: &str) -> Job {
        crate::manifest::parse_job(
            &format!("id: j\nversion: \"{version}\"\nexecute:\n  shell: sh\n  script: echo\n  timeout: {timeout}\n"),
            &Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_version_changes_when_its_manifest_or_script_does() {
        let v1 = job("1", "30s");
        assert!(!version_changed(Some(&v1), &v1, Some("a"), Some("a")));
        assert!(version_changed(
            Some(&v1),
            &job("1", "60s"),
            Some("a"),
            Some("a")
        ));
        assert!(version_changed(Some(&v1), &v1, Some("a"), Some("b")));
        // Another version of the manifest is not a change of this one.
        assert!(!version_changed(
            Some(&v1),
            &job("2", "60s"),
            None,
            Some("b")
        ));
        assert!(!version_changed(None, &v1, None, Some("a")));
    }
}
