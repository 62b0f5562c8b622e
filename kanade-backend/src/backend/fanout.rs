//! Fan-out: which online agents a target addresses, and firing a job at
//! them (one command per subject, the execution recorded first).

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use kanade_core::names::{
    subjects, SubjectToken, BUCKET_AGENT_GROUPS, BUCKET_SCRIPT_CURRENT, OBJECT_SCRIPTS,
};
use kanade_core::transport::ext::to_json_bytes;
use kanade_core::transport::{Headers, ObjectStoreConfig};
use kanade_core::wire::{AgentGroups, Command};

use super::core::Backend;
use super::error::BackendError;
use crate::db::ExecutionRow;
use crate::manifest::Target;

/// What a schedule lowers onto a command.
#[derive(Debug, Clone, Default)]
pub struct FireOptions {
    /// Start deadline (from `starting_deadline`).
    pub deadline_at: Option<chrono::DateTime<Utc>>,
    /// Retry (from `on_failure.retry`).
    pub retry: Option<kanade_core::wire::RetrySpec>,
    /// Jitter cap in seconds (from `jitter`).
    pub jitter_secs: Option<u64>,
    /// Use this execution id (the scheduler records it before firing).
    pub exec_id: Option<String>,
}

impl Backend {
    /// The online agents a target addresses.
    pub async fn target_pcs(&self, target: &Target) -> Result<Vec<String>, BackendError> {
        let since = self.online_since();
        let db = self.db.clone();
        let online: Vec<String> = self
            .run_db(move || db.agents(since))
            .await?
            .into_iter()
            .filter(|a| a.online)
            .map(|a| a.pc_id)
            .collect();
        if target.all {
            return Ok(online);
        }
        let groups = self.bucket(BUCKET_AGENT_GROUPS).await?;
        let mut pcs = Vec::new();
        for pc in online {
            let in_pcs = target.pcs.contains(&pc);
            let in_groups = match groups.get(&pc).await? {
                Some(entry) => serde_json::from_slice::<AgentGroups>(&entry.value)
                    .map(|g| target.groups.iter().any(|t| g.contains(t)))
                    .unwrap_or(false),
                None => false,
            };
            if in_pcs || in_groups {
                pcs.push(pc);
            }
        }
        Ok(pcs)
    }

    /// Runs a job now on `target`: pins its version, publishes one command
    /// and records the execution.
    pub async fn exec(&self, job_id: &str, target: &Target) -> Result<ExecutionRow, BackendError> {
        self.fire(job_id, target, FireOptions::default()).await
    }

    /// [`Backend::exec`] with the options a schedule lowers onto the command.
    pub async fn fire(
        &self,
        job_id: &str,
        target: &Target,
        options: FireOptions,
    ) -> Result<ExecutionRow, BackendError> {
        let job = self.job(job_id).await?;
        if job.require_approval {
            return Err(BackendError::Invalid(format!(
                "job {job_id} requires approval, and this backend has no approval workflow yet: refusing to run it"
            )));
        }
        if !target.all && target.groups.is_empty() && target.pcs.is_empty() {
            return Err(BackendError::Invalid(
                "the target names no agents: use all, groups or pcs".into(),
            ));
        }
        let mut subjects_to = Vec::new();
        if target.all {
            subjects_to.push(subjects::COMMANDS_ALL.to_owned());
        }
        for group in &target.groups {
            let token = SubjectToken::group(group.clone())?;
            subjects_to.push(subjects::commands_group(&token));
        }
        for pc in &target.pcs {
            let token = SubjectToken::pc(pc.clone())?;
            subjects_to.push(subjects::commands_pc(&token));
        }
        let object =
            job.execute.script_object.clone().ok_or_else(|| {
                BackendError::Internal(format!("job {job_id} has no stored script"))
            })?;
        let info = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
            .await?
            .info(&object)
            .await?;
        let timeout =
            humantime::parse_duration(&job.execute.timeout).unwrap_or(Duration::from_secs(60));
        let exec_id = options.exec_id.clone().unwrap_or_else(|| self.new_id());
        let request_id = self.new_id();
        let command = Command {
            id: job.id.clone(),
            version: job.version.clone(),
            request_id: request_id.clone(),
            exec_id: Some(exec_id.clone()),
            shell: job.execute.shell,
            script: String::new(),
            script_object: Some(object),
            script_object_sha256: Some(info.sha256),
            timeout_secs: timeout.as_secs().max(1),
            jitter_secs: options.jitter_secs,
            run_as: job.execute.run_as,
            cwd: job.execute.cwd.clone(),
            deadline_at: options.deadline_at,
            staleness: job.staleness.clone(),
            emit: job.emit,
            check: job.check.clone(),
            retry: options.retry,
        };
        let targeted = self.target_pcs(target).await?.len() as i64;
        let row = ExecutionRow {
            exec_id: exec_id.clone(),
            job_id: job.id.clone(),
            version: job.version.clone(),
            request_id,
            target: serde_json::to_string(target).unwrap_or_default(),
            targeted,
            status: if targeted == 0 {
                "completed".into()
            } else {
                "pending".into()
            },
            created_at: self.now().to_rfc3339(),
            started: 0,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            reap_after_secs: (timeout + self.settings.reap_grace).as_secs() as i64,
        };
        let db = self.db.clone();
        let insert = row.clone();
        self.run_db(move || db.insert_execution(&insert)).await?;
        // The version pin is written before the command goes out, unless an
        // operator pinned one (then agents skip other versions with 124).
        let current = self.bucket(BUCKET_SCRIPT_CURRENT).await?;
        if current.get(&job.id).await?.is_none() {
            current
                .put(&job.id, Bytes::from(job.version.clone()))
                .await?;
        }
        let payload = to_json_bytes("command", &command)?;
        for subject in subjects_to {
            if let Err(e) = self
                .log
                .publish(&subject, Headers::new(), payload.clone())
                .await
            {
                let db = self.db.clone();
                let id = exec_id.clone();
                let _ = self.run_db(move || db.set_status(&id, "failed")).await;
                return Err(e.into());
            }
        }
        Ok(row)
    }
}
