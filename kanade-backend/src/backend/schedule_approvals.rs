//! Approving a schedule of a job that requires approval: the same M-of-N
//! rule as executions ([`crate::approval::decide_approval`]), for the
//! schedule's current job version; the scheduler fires it once approved.

use super::core::Backend;
use super::error::BackendError;
use crate::approval::decide_approval;
use crate::audit::AuditDraft;
use crate::auth::Principal;
use crate::db::{ScheduleApproval, AWAITING_APPROVAL};

impl Backend {
    /// Schedule versions waiting for approvals.
    pub async fn awaiting_schedule_approvals(&self) -> Result<Vec<ScheduleApproval>, BackendError> {
        let db = self.db.clone();
        self.run_db(move || db.awaiting_schedule_approvals()).await
    }

    /// The waiting request of `schedule_id` for its job's current version
    /// (an expired one is ended and refused).
    async fn waiting_schedule_request(
        &self,
        schedule_id: &str,
    ) -> Result<ScheduleApproval, BackendError> {
        let schedule = self.schedule(schedule_id).await?;
        let version = self.job(&schedule.job_id).await?.version;
        let db = self.db.clone();
        let (id, v) = (schedule_id.to_owned(), version.clone());
        let request = self
            .run_db(move || db.schedule_approval(&id, &v))
            .await?
            .ok_or_else(|| {
                BackendError::NotFound(format!(
                    "approval request for schedule {schedule_id} (job version {version})"
                ))
            })?;
        if request.status != AWAITING_APPROVAL {
            return Err(BackendError::Invalid(format!(
                "schedule {schedule_id} (job version {version}) is {}, not awaiting approval",
                request.status
            )));
        }
        if self.now() >= request.rule.expires_at {
            let db = self.db.clone();
            let (id, v) = (schedule_id.to_owned(), version.clone());
            self.run_db(move || db.end_schedule_approval(&id, &v, "expired", None))
                .await?;
            return Err(BackendError::Invalid(format!(
                "the approval request of schedule {schedule_id} expired at {}",
                request.rule.expires_at.to_rfc3339()
            )));
        }
        Ok(request)
    }

    /// Approves `schedule_id` (its job's current version) as `approver`,
    /// with its audit entry in the vote's transaction.
    ///
    /// # Errors
    /// As [`Backend::approve`].
    pub async fn approve_schedule(
        &self,
        schedule_id: &str,
        approver: &Principal,
        audit: Option<AuditDraft>,
    ) -> Result<ScheduleApproval, BackendError> {
        let request = self.waiting_schedule_request(schedule_id).await?;
        let creator = self.token_creator_of(approver).await?;
        let now = self.now();
        decide_approval(
            &request.rule,
            &request.requested_by,
            &request.approvers,
            approver,
            creator.as_deref(),
            now,
        )?;
        let db = self.db.clone();
        let (id, v, name, needed) = (
            schedule_id.to_owned(),
            request.version.clone(),
            approver.name.clone(),
            request.rule.approvals,
        );
        let (stored, _) = self
            .run_db(move || db.record_schedule_approval(&id, &v, &name, needed, now, audit))
            .await?;
        if !stored {
            return Err(BackendError::Invalid(format!(
                "schedule {schedule_id} no longer takes this vote"
            )));
        }
        // An approved agent-side schedule goes out to its agents.
        self.publish_agent_schedules().await?;
        let db = self.db.clone();
        let (id, v) = (schedule_id.to_owned(), request.version);
        self.run_db(move || db.schedule_approval(&id, &v))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("schedule {schedule_id}")))
    }

    /// Denies `schedule_id` (its job's current version): it never fires
    /// for that version; applying the schedule again asks anew.
    pub async fn deny_schedule(
        &self,
        schedule_id: &str,
        by: &Principal,
        audit: Option<AuditDraft>,
    ) -> Result<ScheduleApproval, BackendError> {
        let request = self.waiting_schedule_request(schedule_id).await?;
        if by.role < request.rule.role && by.name != request.requested_by {
            return Err(crate::auth::Denial::Approval(format!(
                "denying this schedule needs the {} role; {} is {}",
                request.rule.role, by.name, by.role
            ))
            .into());
        }
        let db = self.db.clone();
        let (id, v) = (schedule_id.to_owned(), request.version.clone());
        self.run_db(move || db.end_schedule_approval(&id, &v, "denied", audit))
            .await?;
        let db = self.db.clone();
        let (id, v) = (schedule_id.to_owned(), request.version);
        self.run_db(move || db.schedule_approval(&id, &v))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("schedule {schedule_id}")))
    }
}
