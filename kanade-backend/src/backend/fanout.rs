//! Fan-out: which online agents a target addresses, and firing a job at
//! them (one command per subject, the execution recorded first).

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use kanade_core::names::{
    subjects, SubjectToken, BUCKET_AGENT_GROUPS, BUCKET_SCRIPT_CURRENT, OBJECT_SCRIPTS,
};
use kanade_core::transport::ext::to_json_bytes;
use kanade_core::transport::ObjectStoreConfig;
use kanade_core::wire::{AgentGroups, Command};

use super::core::Backend;
use super::error::BackendError;
use crate::auth::Principal;
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
    /// The schedule firing it (recorded on the execution).
    pub schedule_id: Option<String>,
    /// The job requires approval and the scheduler checked that this
    /// schedule's approvers approved its current version.
    pub approved: bool,
    /// Dispatch through a self-stopping rollout (a schedule's `rollout:`
    /// without `strategy`).
    pub rollout: Option<crate::rollout::spec::RolloutSpec>,
}

impl Backend {
    /// The online agents a target addresses.
    pub async fn target_pcs(&self, target: &Target) -> Result<Vec<String>, BackendError> {
        let since = self.online_since();
        let db = self.db.clone();
        let online = self.run_db(move || db.online_pcs(since)).await?;
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

    /// The pcs an execution on `target` counts as its targets: every pc
    /// named explicitly (whether or not it has sent a heartbeat yet — it
    /// may be starting), plus the online agents ([`Backend::target_pcs`])
    /// of its groups, or all online agents. "Known in a group" means its
    /// `agent_groups` entry names the group.
    pub async fn execution_targets(&self, target: &Target) -> Result<Vec<String>, BackendError> {
        let mut pcs = self.target_pcs(target).await?;
        for pc in &target.pcs {
            if !pcs.contains(pc) {
                pcs.push(pc.clone());
            }
        }
        pcs.sort();
        Ok(pcs)
    }

    /// Runs a job now on `target` as the backend itself (an unrestricted
    /// local principal named `backend`): see [`Backend::exec_as`].
    pub async fn exec(&self, job_id: &str, target: &Target) -> Result<ExecutionRow, BackendError> {
        self.exec_as(job_id, target, &Principal::local("backend"))
            .await
    }

    /// Runs a job now on `target` for `requester`: pins its version,
    /// publishes one command and records the execution. A job with
    /// `require_approval` is recorded as `awaiting_approval` instead and
    /// nothing is published until the approvals are in
    /// ([`Backend::approve`]). Scopes are the caller's to check first.
    pub async fn exec_as(
        &self,
        job_id: &str,
        target: &Target,
        requester: &Principal,
    ) -> Result<ExecutionRow, BackendError> {
        self.exec_with(job_id, target, None, requester).await
    }

    /// [`Backend::exec_as`] with an optional self-stopping `rollout`
    /// (DESIGN §11): the execution's targets are then dispatched by the
    /// rollout driver in batches, waves and within its error budget,
    /// instead of one command to every target at once.
    ///
    /// # Errors
    /// Besides those of [`Backend::exec_as`]: the rollout is invalid
    /// (every problem named by field), or is the reference's timed waves
    /// (`strategy: wave`), which only schedules have.
    pub async fn exec_with(
        &self,
        job_id: &str,
        target: &Target,
        rollout: Option<&crate::rollout::spec::RolloutSpec>,
        requester: &Principal,
    ) -> Result<ExecutionRow, BackendError> {
        let rollout = match rollout {
            Some(spec) => Some((
                spec.clone(),
                spec.exec_policy().map_err(BackendError::Invalid)?,
            )),
            None => None,
        };
        let prepared = self.prepare(job_id, target, FireOptions::default()).await?;
        self.refuse_if_pinned_elsewhere(&prepared.job).await?;
        let Some(rule) = prepared.job.require_approval.rule_at(self.now()) else {
            return match rollout {
                Some((spec, policy)) => self.start_rollout(prepared, spec, policy).await,
                None => self.send(prepared).await,
            };
        };
        if rollout.is_some() {
            return Err(BackendError::Invalid(format!(
                "job {job_id} requires approval, and a rollout of it cannot be approved yet: run it without rollout, or from an approved schedule"
            )));
        }
        let mut row = prepared.row.clone();
        row.status = crate::db::AWAITING_APPROVAL.to_owned();
        let pending = serde_json::to_string(&PendingCommand {
            command: prepared.command,
            subjects: prepared.subjects,
        })
        .map_err(BackendError::Encode)?;
        let db = self.db.clone();
        let insert = row.clone();
        let requested_by = requester.name.clone();
        let pcs = prepared.pcs.clone();
        self.run_db(move || {
            db.insert_awaiting_execution(&insert, &requested_by, &rule, &pending)?;
            db.record_targets(&insert.exec_id, &pcs)
        })
        .await?;
        Ok(row)
    }

    /// [`Backend::exec`] with the options a schedule lowers onto the
    /// command. A job that requires approval is refused unless
    /// [`FireOptions::approved`] says its schedule was approved.
    pub async fn fire(
        &self,
        job_id: &str,
        target: &Target,
        options: FireOptions,
    ) -> Result<ExecutionRow, BackendError> {
        let approved = options.approved;
        let rollout = match &options.rollout {
            Some(spec) => Some((
                spec.clone(),
                spec.exec_policy().map_err(BackendError::Invalid)?,
            )),
            None => None,
        };
        let prepared = self.prepare(job_id, target, options).await?;
        if prepared.job.require_approval.required() && !approved {
            return Err(BackendError::Invalid(format!(
                "job {job_id} requires approval: run it with exec, or from a schedule its approvers approved"
            )));
        }
        match rollout {
            Some((spec, policy)) => self.start_rollout(prepared, spec, policy).await,
            None => self.send(prepared).await,
        }
    }

    /// Everything a fire needs, looked up and checked, nothing written.
    async fn prepare(
        &self,
        job_id: &str,
        target: &Target,
        options: FireOptions,
    ) -> Result<Prepared, BackendError> {
        let job = self.job(job_id).await?;
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
        let exec_id = options.exec_id.clone().unwrap_or_else(|| self.new_id());
        let (command, timeout) = self.command_for(&job, &exec_id, &options).await?;
        let request_id = command.request_id.clone();
        let pcs = self.execution_targets(target).await?;
        let targeted = pcs.len() as i64;
        let row = ExecutionRow {
            exec_id,
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
            late_targets: 0,
            schedule_id: options.schedule_id.clone(),
        };
        Ok(Prepared {
            job,
            command,
            subjects: subjects_to,
            row,
            pcs,
        })
    }

    /// Records the execution, then pins and publishes.
    async fn send(&self, prepared: Prepared) -> Result<ExecutionRow, BackendError> {
        let db = self.db.clone();
        let insert = prepared.row.clone();
        let pcs = prepared.pcs.clone();
        self.run_db(move || {
            db.insert_execution(&insert)?;
            db.record_targets(&insert.exec_id, &pcs)
        })
        .await?;
        self.publish_command(&prepared.command, &prepared.subjects)
            .await?;
        Ok(prepared.row)
    }

    /// [`Backend::publish_to`]; a failed publish marks the execution
    /// `failed`.
    pub(super) async fn publish_command(
        &self,
        command: &Command,
        subjects_to: &[String],
    ) -> Result<(), BackendError> {
        let published = self.publish_to(command, subjects_to).await;
        if published.is_err() {
            let db = self.db.clone();
            let id = command.exec_id.clone().unwrap_or_default();
            let _ = self.run_db(move || db.set_status(&id, "failed")).await;
        }
        published
    }

    /// Pins the command's version (unless an operator pinned one: then
    /// agents skip other versions with 124), stamps it with the backend's
    /// clock, signs it once and publishes it on every subject.
    pub(super) async fn publish_to(
        &self,
        command: &Command,
        subjects_to: &[String],
    ) -> Result<(), BackendError> {
        for published in self.publish_each(command, subjects_to).await? {
            published?;
        }
        Ok(())
    }

    /// [`Backend::publish_to`], going on past a subject whose publish
    /// failed: each subject's outcome, in order (the error before any
    /// publish — pinning the version — is the call's).
    pub(super) async fn publish_each(
        &self,
        command: &Command,
        subjects_to: &[String],
    ) -> Result<Vec<Result<(), BackendError>>, BackendError> {
        let current = self.bucket(BUCKET_SCRIPT_CURRENT).await?;
        if current.get(&command.id).await?.is_none() {
            current
                .put(&command.id, Bytes::from(command.version.clone()))
                .await?;
        }
        // The backend's clock at publish: agents estimate their offset
        // from it (a deadline is judged by the backend's clock).
        let command = Command {
            issued_at: Some(self.now()),
            ..command.clone()
        };
        let payload = to_json_bytes("command", &command)?;
        // Signed once: the same bytes and headers go to every subject.
        let what = format!(
            "execution {}",
            command.exec_id.as_deref().unwrap_or(&command.request_id)
        );
        let headers = self.signature_headers(&payload, &what).await;
        let mut outcomes = Vec::with_capacity(subjects_to.len());
        for subject in subjects_to {
            outcomes.push(
                self.log
                    .publish(subject, headers.clone(), payload.clone())
                    .await
                    .map(|_| ())
                    .map_err(BackendError::from),
            );
        }
        Ok(outcomes)
    }
}

impl Backend {
    /// The command that runs `job`'s current version as execution
    /// `exec_id` (a new request id), with `options` lowered onto it, and
    /// the job's timeout.
    pub(super) async fn command_for(
        &self,
        job: &crate::manifest::Job,
        exec_id: &str,
        options: &FireOptions,
    ) -> Result<(Command, Duration), BackendError> {
        let object = job.execute.script_object.clone().ok_or_else(|| {
            BackendError::Internal(format!("job {} has no stored script", job.id))
        })?;
        let info = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
            .await?
            .info(&object)
            .await?;
        let timeout =
            humantime::parse_duration(&job.execute.timeout).unwrap_or(Duration::from_secs(60));
        let request_id = self.new_id();
        let command = Command {
            id: job.id.clone(),
            version: job.version.clone(),
            request_id: request_id.clone(),
            exec_id: Some(exec_id.to_owned()),
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
            // Stamped when it is published (publish_command).
            issued_at: None,
            kitting: job.kitting,
        };
        Ok((command, timeout))
    }
}

/// A fire looked up and checked, not yet written or sent.
pub(super) struct Prepared {
    pub(super) job: crate::manifest::Job,
    pub(super) command: Command,
    pub(super) subjects: Vec<String>,
    pub(super) row: ExecutionRow,
    /// The pcs it counts as targets.
    pub(super) pcs: Vec<String>,
}

/// What an execution awaiting approval publishes on quorum (stored as JSON
/// with it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct PendingCommand {
    pub(super) command: Command,
    pub(super) subjects: Vec<String>,
}
