//! The catalogue: jobs and schedules, validated and kept in the key-value
//! buckets (JSON for the backend, the YAML verbatim for operators), script
//! bodies in the object store.

use std::collections::BTreeMap;

use bytes::Bytes;
use kanade_core::names::{
    BUCKET_JOBS, BUCKET_JOBS_YAML, BUCKET_SCHEDULES, BUCKET_SCHEDULES_YAML, BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS, OBJECT_SCRIPTS, SCRIPT_STATUS_ACTIVE,
};
use kanade_core::transport::ext::KeyValueExt;
use kanade_core::transport::ObjectStoreConfig;

use super::core::Backend;
use super::error::BackendError;
use super::versions::{version_changed, AppliedJob};
use crate::auth::Principal;
use crate::manifest::{parse_job, parse_schedule, Job, Schedule};

impl Backend {
    /// Validates and stores a job: JSON in `jobs`, the YAML verbatim in
    /// `jobs_yaml`, the script body in `scripts` as `<id>/<version>`.
    ///
    /// A version is immutable: re-applying it with other content is refused
    /// ([`Backend::apply_job_with`] with `replace` does it on purpose).
    pub async fn apply_job(
        &self,
        yaml: &str,
        script_files: &BTreeMap<String, String>,
    ) -> Result<Job, BackendError> {
        Ok(self.apply_job_with(yaml, script_files, false).await?.job)
    }

    /// [`Backend::apply_job`] that may replace a version's content
    /// (`replace`), saying what it did; the API audits a replacement.
    pub async fn apply_job_with(
        &self,
        yaml: &str,
        script_files: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<AppliedJob, BackendError> {
        let mut job = parse_job(yaml, script_files)?;
        let body = job.execute.script.take();
        let key = format!("{}/{}", job.id, job.version);
        if body.is_some() {
            job.execute.script_file = None;
            job.execute.script_object = Some(key.clone());
        }
        if let Some(check) = &job.check {
            let db = self.db.clone();
            let (name, id) = (check.name.clone(), job.id.clone());
            if let Some(owner) = self.run_db(move || db.check_owner(&name, &id)).await? {
                return Err(BackendError::Invalid(format!(
                    "check {:?} belongs to job {owner}: give this job's check another name",
                    check.name
                )));
            }
        }
        let stored = self.stored_job(&job.id).await?;
        let stored_sha = self.stored_script_sha256(&key).await?;
        let new_sha = body
            .as_deref()
            .map(|b| crate::audit::chain::sha256_hex(b.as_bytes()));
        let replaced = version_changed(
            stored.as_ref(),
            &job,
            stored_sha.as_deref(),
            new_sha.as_deref(),
        );
        if replaced && !replace {
            return Err(BackendError::Invalid(format!(
                "job {} version {} was already applied with other content: give the change a new version (or re-apply with --replace, which is audited)",
                job.id, job.version
            )));
        }
        if let Some(body) = body {
            let store = self
                .transport
                .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
                .await?;
            store.put(&key, &mut body.as_bytes()).await?;
        }
        self.bucket(BUCKET_JOBS)
            .await?
            .put_json(&job.id, &job)
            .await?;
        self.bucket(BUCKET_JOBS_YAML)
            .await?
            .put(&job.id, Bytes::from(yaml.to_owned()))
            .await?;
        // What its results project to (inventory, check), by version.
        let db = self.db.clone();
        let hints = (
            job.id.clone(),
            job.version.clone(),
            job.inventory_hint(),
            job.check.clone(),
        );
        self.run_db(move || {
            db.record_job_hints(&hints.0, &hints.1, hints.2.as_ref(), hints.3.as_ref())
        })
        .await?;
        // The applied version becomes current, unless an operator pin
        // holds the job at another one.
        let pinned = self
            .pin_of(&job.id)
            .await?
            .map(|pin| pin.version)
            .filter(|version| *version != job.version);
        if pinned.is_none() {
            self.bucket(BUCKET_SCRIPT_CURRENT)
                .await?
                .put(&job.id, Bytes::from(job.version.clone()))
                .await?;
        }
        let status = self.bucket(BUCKET_SCRIPT_STATUS).await?;
        if status.get(&job.id).await?.is_none() {
            status
                .put(&job.id, Bytes::from_static(SCRIPT_STATUS_ACTIVE.as_bytes()))
                .await?;
        }
        // Agent-side schedules of this job fire its new version from now.
        if let Err(e) = self.publish_agent_schedules().await {
            tracing::warn!(job = job.id, "agent-side schedules not republished: {e}");
        }
        Ok(AppliedJob {
            job,
            replaced,
            pinned,
        })
    }

    /// Every job.
    pub async fn jobs(&self) -> Result<Vec<Job>, BackendError> {
        let bucket = self.bucket(BUCKET_JOBS).await?;
        let mut jobs = Vec::new();
        for key in bucket.keys().await? {
            if let Some(entry) = bucket.get(&key).await? {
                match serde_json::from_slice(&entry.value) {
                    Ok(job) => jobs.push(job),
                    Err(e) => tracing::warn!(key, "unreadable job: {e}"),
                }
            }
        }
        Ok(jobs)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job, BackendError> {
        self.bucket(BUCKET_JOBS)
            .await?
            .get_json(id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("job {id}")))
    }

    /// Validates and stores a schedule (fired by the scheduler), applied by
    /// the backend itself: see [`Backend::apply_schedule_as`].
    pub async fn apply_schedule(&self, yaml: &str) -> Result<Schedule, BackendError> {
        self.apply_schedule_as(yaml, &Principal::local("backend"))
            .await
    }

    /// Validates and stores a schedule for `requester`. When its job
    /// requires approval, the schedule waits for its approvers (once per
    /// job version: [`Backend::approve_schedule`]); the scheduler fires it
    /// only once approved.
    pub async fn apply_schedule_as(
        &self,
        yaml: &str,
        requester: &Principal,
    ) -> Result<Schedule, BackendError> {
        let schedule = parse_schedule(yaml)?;
        // A missing job is the caller's mistake; a store that cannot answer
        // (or answers garbage) is not.
        let job = self.job(&schedule.job_id).await.map_err(|e| match e {
            BackendError::NotFound(_) => BackendError::Invalid(format!(
                "schedule {} names job {} which does not exist",
                schedule.id, schedule.job_id
            )),
            other => other,
        })?;
        let approval = job.require_approval.rule_at(self.now());
        self.bucket(BUCKET_SCHEDULES)
            .await?
            .put_json(&schedule.id, &schedule)
            .await?;
        self.bucket(BUCKET_SCHEDULES_YAML)
            .await?
            .put(&schedule.id, Bytes::from(yaml.to_owned()))
            .await?;
        if let Some(rule) = approval {
            let db = self.db.clone();
            let (id, version, by, now) = (
                schedule.id.clone(),
                job.version.clone(),
                requester.name.clone(),
                self.now(),
            );
            self.run_db(move || db.request_schedule_approval(&id, &version, &by, &rule, now))
                .await?;
        }
        self.publish_agent_schedules().await?;
        Ok(schedule)
    }

    /// One schedule.
    pub async fn schedule(&self, id: &str) -> Result<Schedule, BackendError> {
        self.bucket(BUCKET_SCHEDULES)
            .await?
            .get_json(id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("schedule {id}")))
    }

    /// Turns a schedule on or off (takes effect at the next tick).
    pub async fn set_schedule_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Schedule, BackendError> {
        let mut schedule = self.schedule(id).await?;
        schedule.enabled = enabled;
        self.bucket(BUCKET_SCHEDULES)
            .await?
            .put_json(id, &schedule)
            .await?;
        self.publish_agent_schedules().await?;
        Ok(schedule)
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, BackendError> {
        let bucket = self.bucket(BUCKET_SCHEDULES).await?;
        let mut out = Vec::new();
        for key in bucket.keys().await? {
            if let Some(entry) = bucket.get(&key).await? {
                if let Ok(schedule) = serde_json::from_slice(&entry.value) {
                    out.push(schedule);
                }
            }
        }
        Ok(out)
    }
}
