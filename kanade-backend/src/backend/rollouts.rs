//! Self-stopping rollouts (DESIGN §11) on the backend: starting one for an
//! execution, the driver that dispatches its targets step by step (asking
//! `rollout::decide` what to do, doing it against SQLite and the
//! transport), its halt actions, and the operator's pause, resume, abort
//! and status.
//!
//! Dispatch is at most once per target: a target is marked `dispatched`
//! in SQLite (only while the rollout is `running`) before its command is
//! published, and put back to `pending` only if the publish failed. A
//! backend that dies between the two leaves it `dispatched`; it never
//! started, so it gives its slot back after `start_within` and shows
//! `unreached`. The command carries that start deadline, so an agent that
//! receives it later skips it instead of running outside the window.

use std::time::Duration;

use kanade_core::names::{subjects, SubjectToken, BUCKET_AGENT_GROUPS};
use kanade_core::wire::{AgentGroups, Command};
use serde::Serialize;

use super::core::Backend;
use super::error::BackendError;
use super::fanout::Prepared;
use crate::db::{
    ExecutionRow, RolloutRow, WaveCounts, ROLLOUT_ABORTED, ROLLOUT_HALTED, ROLLOUT_PAUSED,
    ROLLOUT_RUNNING,
};
use crate::rollout::decide::{assign_waves, effective_window, next_step, slot_expires, Step, View};
use crate::rollout::spec::{RolloutPolicy, RolloutSpec, WaveRule};

/// Extra time a dispatched target keeps its slot past its start deadline,
/// for a start event already on its way.
const START_GRACE: Duration = Duration::from_secs(10);

/// How often the driver looks at running rollouts without being woken
/// (agents coming online, bakes ending, start deadlines passing).
const DRIVER_TICK: Duration = Duration::from_secs(1);

/// The validated policy of a self-stopping `spec`
/// ([`RolloutSpec::exec_policy`]) as a backend error.
pub(super) fn policy_of(spec: &RolloutSpec) -> Result<RolloutPolicy, BackendError> {
    spec.exec_policy().map_err(BackendError::Invalid)
}

/// Where a rollout stands: `kanade rollout status`, `GET
/// /api/executions/{id}/rollout`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RolloutStatus {
    /// The rollout's state and budget counts.
    pub rollout: RolloutRow,
    /// Targets dispatched per step.
    pub batch: u64,
    /// Targets in flight at most.
    pub window: u64,
    /// The window now: with a percentage budget it starts at `min_sample`
    /// and grows with the results judged (see
    /// [`effective_window`](crate::rollout::decide::effective_window)).
    pub window_now: u64,
    /// The budget as written (`5%`, `1`), if any.
    pub max_errors: Option<String>,
    /// Results before a percentage budget is judged.
    pub min_sample: u64,
    /// Each wave: its rule (`group canary`, `up to 25%`), bake in seconds,
    /// and its targets' counts.
    pub waves: Vec<WaveStatus>,
}

/// One wave of [`RolloutStatus`].
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WaveStatus {
    /// `group canary` or `up to 25%`.
    pub rule: String,
    /// Bake after it, in seconds.
    pub bake_secs: u64,
    /// Its targets.
    pub counts: WaveCounts,
}

impl Backend {
    /// Records the execution and its rollout (targets assigned to waves,
    /// all `pending`) and wakes the driver, which dispatches.
    pub(super) async fn start_rollout(
        &self,
        prepared: Prepared,
        spec: RolloutSpec,
        policy: RolloutPolicy,
    ) -> Result<ExecutionRow, BackendError> {
        let needs_groups = policy
            .waves
            .iter()
            .any(|w| matches!(w.rule, WaveRule::Group(_)));
        let mut groups_of = vec![Vec::new(); prepared.pcs.len()];
        if needs_groups {
            let bucket = self.bucket(BUCKET_AGENT_GROUPS).await?;
            for (n, pc) in prepared.pcs.iter().enumerate() {
                if let Some(entry) = bucket.get(pc).await? {
                    if let Ok(groups) = serde_json::from_slice::<AgentGroups>(&entry.value) {
                        groups_of[n] = groups.groups().to_vec();
                    }
                }
            }
        }
        let waves = assign_waves(&groups_of, &policy.waves);
        let targets: Vec<(String, usize)> = prepared.pcs.iter().cloned().zip(waves).collect();
        let command = serde_json::to_string(&prepared.command).map_err(BackendError::Encode)?;
        let mut row = prepared.row.clone();
        if row.targeted > 0 {
            row.status = "running".into();
        }
        let db = self.db.clone();
        let insert = row.clone();
        let pcs = prepared.pcs.clone();
        self.run_db(move || {
            db.insert_execution(&insert)?;
            db.record_targets(&insert.exec_id, &pcs)?;
            db.insert_rollout(&insert.exec_id, &spec, &command, &targets)
        })
        .await?;
        self.db.rollout_changed().notify_one();
        Ok(row)
    }

    /// A rollout's row, its per-wave counts and its execution's targeted
    /// count, read together.
    async fn rollout_snapshot(
        &self,
        exec_id: &str,
    ) -> Result<(Option<RolloutRow>, Vec<WaveCounts>, i64), BackendError> {
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || {
            let row = db.rollout(&id)?;
            let counts = db.rollout_waves(&id)?;
            let targeted = db.execution(&id)?.map(|e| e.targeted).unwrap_or(0);
            Ok((row, counts, targeted))
        })
        .await
    }

    /// Where a rollout stands.
    ///
    /// # Errors
    /// `NotFound` when the execution has no rollout.
    pub async fn rollout_status(&self, exec_id: &str) -> Result<RolloutStatus, BackendError> {
        let (row, counts, targeted) = self.rollout_snapshot(exec_id).await?;
        let Some(row) = row else {
            return Err(BackendError::NotFound(format!(
                "a rollout of execution {exec_id}"
            )));
        };
        let policy = policy_of(&row.spec)?;
        let total = targeted.max(0) as u64;
        let waves = policy
            .waves
            .iter()
            .enumerate()
            .map(|(n, wave)| WaveStatus {
                rule: match &wave.rule {
                    WaveRule::Group(g) => format!("group {g}"),
                    WaveRule::Percent(p) => format!("up to {p}%"),
                },
                bake_secs: wave.bake.as_secs(),
                counts: counts
                    .iter()
                    .find(|c| c.wave == n as i64)
                    .cloned()
                    .unwrap_or(WaveCounts {
                        wave: n as i64,
                        ..WaveCounts::default()
                    }),
            })
            .collect();
        Ok(RolloutStatus {
            batch: policy.batch_size(total),
            window: policy.window(total),
            window_now: effective_window(&policy, total, row.budget_results.max(0) as u64),
            max_errors: policy.max_errors.map(|a| a.to_string()),
            min_sample: policy.min_sample,
            waves,
            rollout: row,
        })
    }

    /// Pauses a running rollout: nothing more is dispatched until resumed
    /// (targets in flight finish; their results are still judged).
    pub async fn pause_rollout(&self, exec_id: &str) -> Result<RolloutStatus, BackendError> {
        self.transition(
            exec_id,
            &[ROLLOUT_RUNNING],
            ROLLOUT_PAUSED,
            None,
            "running",
            false,
        )
        .await
    }

    /// Resumes a paused or halted rollout with the targets not yet done
    /// (and those shown `unreached`), with a fresh error budget. If the
    /// job has a new version since (the fix for what halted it), the rest
    /// of the rollout runs that version.
    pub async fn resume_rollout(&self, exec_id: &str) -> Result<RolloutStatus, BackendError> {
        self.transition(
            exec_id,
            &[ROLLOUT_PAUSED, ROLLOUT_HALTED],
            ROLLOUT_RUNNING,
            None,
            "running",
            true,
        )
        .await
    }

    /// Aborts a rollout for good: nothing more is dispatched; targets in
    /// flight finish (kill the execution to stop them).
    pub async fn abort_rollout(
        &self,
        exec_id: &str,
        by: &str,
    ) -> Result<RolloutStatus, BackendError> {
        self.transition(
            exec_id,
            &[ROLLOUT_RUNNING, ROLLOUT_PAUSED, ROLLOUT_HALTED],
            ROLLOUT_ABORTED,
            Some(format!("aborted by {by}")),
            "aborted",
            false,
        )
        .await
    }

    async fn transition(
        &self,
        exec_id: &str,
        from: &'static [&'static str],
        to: &'static str,
        reason: Option<String>,
        execution_status: &'static str,
        refresh_version: bool,
    ) -> Result<RolloutStatus, BackendError> {
        let status = self.rollout_status(exec_id).await?;
        let mut new_command = None;
        if refresh_version {
            let current: Command =
                serde_json::from_str(&status.rollout.command).map_err(BackendError::Encode)?;
            let job = self.job(&current.id).await?;
            self.refuse_if_pinned_elsewhere(&job).await?;
            // The halt revoked the job (on_halt: revoke): resuming lifts it.
            if status.rollout.state == ROLLOUT_HALTED
                && policy_of(&status.rollout.spec)?.revoke_on_halt
            {
                self.activate(&job.id).await?;
            }
            if job.version != current.version {
                // A schedule's retry and jitter carry over to the new version.
                let options = super::fanout::FireOptions {
                    retry: current.retry,
                    jitter_secs: current.jitter_secs,
                    ..Default::default()
                };
                let (command, _) = self.command_for(&job, exec_id, &options).await?;
                new_command = Some((
                    serde_json::to_string(&command).map_err(BackendError::Encode)?,
                    job.version.clone(),
                ));
            }
        }
        let db = self.db.clone();
        let id = exec_id.to_owned();
        let was = self
            .run_db(move || {
                db.transition_rollout(
                    &id,
                    from,
                    to,
                    reason.as_deref(),
                    execution_status,
                    new_command.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
                )
            })
            .await?;
        if was.is_none() {
            return Err(BackendError::Invalid(format!(
                "the rollout of execution {exec_id} is {}: it can become {to} only from {}",
                status.rollout.state,
                from.join(" or ")
            )));
        }
        self.db.rollout_changed().notify_one();
        self.rollout_status(exec_id).await
    }

    /// One pass of the driver over every rollout with work: halt actions
    /// for newly halted ones, then the next steps of running ones.
    /// Returns how many rollouts had work (0: nothing to drive until one
    /// starts or an operator acts).
    pub async fn drive_rollouts(&self) -> Result<usize, BackendError> {
        let db = self.db.clone();
        let active = self.run_db(move || db.active_rollouts()).await?;
        let count = active.len();
        for row in active {
            if row.state == ROLLOUT_HALTED {
                if let Err(e) = self.halt_actions(&row).await {
                    tracing::warn!(exec_id = row.exec_id, "rollout halt actions: {e}");
                }
            } else if let Err(e) = self.drive(&row).await {
                tracing::warn!(exec_id = row.exec_id, "rollout step: {e}");
            }
        }
        Ok(count)
    }

    /// The `on_halt` actions of a halted rollout (revoke, kill), audited
    /// as `rollout.halt` with its reason, done once — only if it is still
    /// halted (a resume may have come since the driver looked). An action
    /// that fails is logged and audited (outcome `failed`), and never holds
    /// up the other rollouts.
    async fn halt_actions(&self, row: &RolloutRow) -> Result<(), BackendError> {
        let db = self.db.clone();
        let id = row.exec_id.clone();
        let Some(row) = self
            .run_db(move || db.rollout(&id))
            .await?
            .filter(|r| r.state == ROLLOUT_HALTED && !r.halt_actions_done)
        else {
            return Ok(());
        };
        let policy = policy_of(&row.spec)?;
        let command: Command = serde_json::from_str(&row.command).map_err(BackendError::Encode)?;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        if policy.revoke_on_halt {
            match self.revoke(&command.id).await {
                Ok(()) => done.push("revoke".to_owned()),
                Err(e) => failed.push(format!("revoke: {e}")),
            }
        }
        if policy.kill_on_halt {
            match self.kill_copies(&row.exec_id).await {
                Ok(()) => done.push("kill".to_owned()),
                Err(e) => failed.push(format!("kill: {e}")),
            }
        }
        let outcome = if failed.is_empty() {
            crate::audit::OUTCOME_OK
        } else {
            crate::audit::OUTCOME_FAILED
        };
        let mut entry = self.own_audit_draft("rollout.halt", outcome);
        entry.id = Some(format!(
            "rollout.halt:{}:{}",
            row.exec_id, row.budget_results
        ));
        entry.target = Some(row.exec_id.clone());
        entry.details = serde_json::json!({
            "reason": row.reason,
            "job": command.id,
            "version": command.version,
            "on_halt": done,
            "failed": failed,
        });
        tracing::warn!(
            exec_id = row.exec_id,
            "rollout halted: {}{}",
            row.reason.as_deref().unwrap_or(""),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; on_halt failed: {}", failed.join("; "))
            }
        );
        let db = self.db.clone();
        let id = row.exec_id.clone();
        self.run_db(move || {
            db.append_audit(entry)?;
            db.rollout_halt_actions_done(&id)
        })
        .await?;
        // Counted once: the actions are marked done with the audit entry.
        self.metrics.rollout_halts.inc();
        Ok(())
    }

    /// The next steps of one running rollout, until it waits.
    async fn drive(&self, row: &RolloutRow) -> Result<(), BackendError> {
        let policy = policy_of(&row.spec)?;
        let now = self.now();
        let db = self.db.clone();
        let id = row.exec_id.clone();
        let expired_before = chrono::Duration::from_std(policy.start_within + START_GRACE)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        self.run_db(move || db.expire_unstarted(&id, expired_before))
            .await?;
        // Each pass moves at least one wave or dispatches; bounded anyway.
        for _ in 0..(policy.waves.len() * 3 + 3) {
            let since = self.online_since();
            let (current, counts, targeted) = self.rollout_snapshot(&row.exec_id).await?;
            let Some(current) = current.filter(|r| r.state == ROLLOUT_RUNNING) else {
                return Ok(());
            };
            let wave = counts
                .iter()
                .find(|c| c.wave == current.wave)
                .cloned()
                .unwrap_or_default();
            let total = targeted.max(0) as u64;
            let db = self.db.clone();
            let id = row.exec_id.clone();
            let wave_index = current.wave;
            let batch = policy.batch_size(total);
            let online = self
                .run_db(move || db.rollout_pending_online(&id, wave_index, since, batch))
                .await?;
            let view = View {
                total,
                wave: current.wave.max(0) as usize,
                pending: wave.pending.max(0) as u64,
                pending_online: online.len() as u64,
                in_flight: counts.iter().map(|c| c.in_flight.max(0) as u64).sum(),
                in_flight_wave: wave.in_flight.max(0) as u64,
                wave_finished_at: current
                    .wave_finished_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc)),
                judged: current.budget_results.max(0) as u64,
                now,
            };
            let db = self.db.clone();
            let id = row.exec_id.clone();
            match next_step(&policy, &view) {
                Step::Dispatch(n) => {
                    let pcs: Vec<String> = online.into_iter().take(n as usize).collect();
                    return self.dispatch(&current, &policy, pcs).await;
                }
                Step::GiveUpOffline => {
                    self.run_db(move || db.give_up_offline(&id, wave_index))
                        .await?;
                }
                Step::WaveFinished => {
                    self.run_db(move || db.rollout_wave_finished(&id, now))
                        .await?;
                }
                Step::NextWave => {
                    self.run_db(move || db.rollout_next_wave(&id)).await?;
                }
                Step::Complete => {
                    self.run_db(move || db.complete_rollout(&id)).await?;
                    return Ok(());
                }
                Step::Bake(_) | Step::Wait => return Ok(()),
            }
        }
        Ok(())
    }

    /// Marks `pcs` dispatched (only while running), then publishes the
    /// command to each, with its start deadline; a failed publish puts
    /// them back to pending.
    async fn dispatch(
        &self,
        row: &RolloutRow,
        policy: &RolloutPolicy,
        pcs: Vec<String>,
    ) -> Result<(), BackendError> {
        let now = self.now();
        let db = self.db.clone();
        let id = row.exec_id.clone();
        let marked = self
            .run_db(move || db.mark_dispatched(&id, &pcs, now))
            .await?;
        if marked.is_empty() {
            return Ok(());
        }
        let mut command: Command =
            serde_json::from_str(&row.command).map_err(BackendError::Encode)?;
        let deadline = slot_expires(now, policy, Duration::ZERO);
        command.deadline_at = Some(command.deadline_at.map_or(deadline, |d| d.min(deadline)));
        let mut to = Vec::with_capacity(marked.len());
        for pc in &marked {
            to.push(subjects::commands_pc(&SubjectToken::pc(pc.clone())?));
        }
        // Only the targets whose publish failed go back to pending: the
        // others have their command.
        let outcomes = match self.publish_each(&command, &to).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let db = self.db.clone();
                let id = row.exec_id.clone();
                self.run_db(move || db.undo_dispatch(&id, &marked)).await?;
                return Err(e);
            }
        };
        let mut failed = Vec::new();
        let mut last_error = None;
        for (pc, outcome) in marked.iter().zip(outcomes) {
            if let Err(e) = outcome {
                failed.push(pc.clone());
                last_error = Some(e);
            }
        }
        if let Some(e) = last_error {
            let db = self.db.clone();
            let id = row.exec_id.clone();
            self.run_db(move || db.undo_dispatch(&id, &failed)).await?;
            return Err(e);
        }
        Ok(())
    }
}

/// The driver: a pass over the rollouts whenever a result moves one (or
/// one starts, or an operator acts), and every [`DRIVER_TICK`] while any
/// has work (bakes and start deadlines run on time). With none active it
/// waits for a notification only: a rollout's start notifies.
pub(super) async fn rollout_driver(backend: Backend) {
    let changed = backend.db.rollout_changed().clone();
    loop {
        match backend.drive_rollouts().await {
            Ok(0) => changed.notified().await,
            Ok(_) => {
                let _ = tokio::time::timeout(DRIVER_TICK, changed.notified()).await;
            }
            Err(e) => {
                tracing::warn!("rollout driver: {e}");
                let _ = tokio::time::timeout(DRIVER_TICK, changed.notified()).await;
            }
        }
    }
}
