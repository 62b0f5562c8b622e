//! The stop layers: revoke / activate a job (agents skip a revoked one with
//! 126), pin a version (others are skipped with 124), kill an execution
//! (durably: recorded in `exec_kills`, then published on `kill.<exec_id>`).

use bytes::Bytes;
use kanade_core::names::{
    exec_kills_config, subjects, SubjectToken, TokenKind, BUCKET_SCRIPT_STATUS,
    SCRIPT_STATUS_ACTIVE, SCRIPT_STATUS_REVOKED,
};
use kanade_core::wire::KillRecord;

use super::core::Backend;

/// What [`Backend::kill`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// The kill was recorded and published; the execution is `cancelled`.
    Killed,
    /// The execution had already finished (`status`: `completed`,
    /// `cancelled` or `failed`); nothing was changed or published.
    AlreadyFinished {
        /// Its status, unchanged.
        status: String,
    },
}

/// Whether an execution's target (its JSON) reaches agents beyond those
/// named: `all` or groups, whose late members may still answer (pure).
pub fn open_to_late_targets(target_json: &str) -> bool {
    serde_json::from_str::<crate::manifest::Target>(target_json)
        .map_or(true, |t| t.all || !t.groups.is_empty())
}

/// The status of an execution that is over, or `None` while it may still
/// run (pending, running, awaiting approval).
pub fn finished_status(status: &str) -> Option<&str> {
    matches!(status, "completed" | "cancelled" | "failed").then_some(status)
}

/// Whether an execution with `status` will never run anything again: it
/// finished ([`finished_status`]), or its approval ended it (`denied`,
/// `expired`). A halted or aborted rollout may still have runs going.
pub fn execution_over(status: &str) -> bool {
    finished_status(status).is_some() || matches!(status, "denied" | "expired")
}
use super::error::BackendError;

impl Backend {
    /// Stops a job everywhere: agents skip it with 126.
    pub async fn revoke(&self, job_id: &str) -> Result<(), BackendError> {
        self.job(job_id).await?;
        self.bucket(BUCKET_SCRIPT_STATUS)
            .await?
            .put(job_id, Bytes::from_static(SCRIPT_STATUS_REVOKED.as_bytes()))
            .await?;
        Ok(())
    }

    /// Lets a revoked job run again.
    pub async fn activate(&self, job_id: &str) -> Result<(), BackendError> {
        self.job(job_id).await?;
        self.bucket(BUCKET_SCRIPT_STATUS)
            .await?
            .put(job_id, Bytes::from_static(SCRIPT_STATUS_ACTIVE.as_bytes()))
            .await?;
        Ok(())
    }

    /// Kills an execution: its running processes on every agent now, and —
    /// because the kill is recorded in `exec_kills` first — every command
    /// of it an agent learns of later (back from offline, restarted), which
    /// then reports exit -1 "killed before start" instead of running.
    ///
    /// # Errors
    /// The execution is unknown, or the record could not be written (then
    /// nothing was published and the execution is not marked cancelled).
    pub async fn kill(&self, exec_id: &str) -> Result<KillOutcome, BackendError> {
        let token = SubjectToken::new(TokenKind::ExecId, exec_id.to_owned())?;
        let db = self.db.clone();
        let id = exec_id.to_owned();
        let Some(execution) = self.run_db(move || db.execution(&id)).await? else {
            return Err(BackendError::NotFound(format!("execution {exec_id}")));
        };
        if let Some(status) = finished_status(&execution.status) {
            // History stays as it is. A fleet-wide or group execution may
            // still reach agents it did not count (they answer late): the
            // kill is recorded for them, its status unchanged.
            if status == "completed" && open_to_late_targets(&execution.target) {
                self.record_and_publish_kill(exec_id, &token).await?;
            }
            return Ok(KillOutcome::AlreadyFinished {
                status: status.to_owned(),
            });
        }
        self.record_and_publish_kill(exec_id, &token).await?;
        // A rollout of a killed execution dispatches nothing more.
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || {
            db.transition_rollout(
                &id,
                &[
                    crate::db::ROLLOUT_RUNNING,
                    crate::db::ROLLOUT_PAUSED,
                    crate::db::ROLLOUT_HALTED,
                ],
                crate::db::ROLLOUT_ABORTED,
                Some("aborted by a kill of the execution"),
                "cancelled",
                None,
            )
        })
        .await?;
        // A halted or aborted rollout keeps saying why it stopped.
        if execution.status != "halted" && execution.status != "aborted" {
            let db = self.db.clone();
            let id = exec_id.to_owned();
            self.run_db(move || db.set_status(&id, "cancelled")).await?;
        }
        Ok(KillOutcome::Killed)
    }

    /// Kills the running copies of an execution (a rollout's `on_halt:
    /// kill`), leaving its status as it is.
    pub(super) async fn kill_copies(&self, exec_id: &str) -> Result<(), BackendError> {
        let token = SubjectToken::new(TokenKind::ExecId, exec_id.to_owned())?;
        self.record_and_publish_kill(exec_id, &token).await
    }

    /// Records the kill in `exec_kills`, then publishes `kill.<exec_id>`,
    /// both signed.
    async fn record_and_publish_kill(
        &self,
        exec_id: &str,
        token: &SubjectToken,
    ) -> Result<(), BackendError> {
        // The body names the execution, so a signed kill cannot be moved
        // onto another execution's subject.
        let body = Bytes::from(exec_id.to_owned());
        let headers = self
            .signature_headers(&body, &format!("kill of execution {exec_id}"))
            .await;
        let record = KillRecord {
            exec_id: exec_id.to_owned(),
            killed_at: self.now(),
            signature: headers.clone(),
        };
        self.transport
            .key_value(exec_kills_config())
            .await?
            .put(
                exec_id,
                Bytes::from(serde_json::to_vec(&record).unwrap_or_default()),
            )
            .await?;
        self.log
            .publish(&subjects::kill(token), headers, body)
            .await?;
        Ok(())
    }
}
