//! The approval workflow (M-of-N, DESIGN §10): approving, denying and
//! expiring executions that wait in `awaiting_approval`. The decision of
//! one vote is pure ([`crate::approval::decide_approval`]); the vote and
//! the move to `pending` are one SQLite transaction, so exactly one quorum
//! publishes exactly one command, across restarts too.

use super::core::Backend;
use super::error::BackendError;
use super::fanout::PendingCommand;
use kanade_core::wire::AuditSource;

use crate::approval::decide_approval;
use crate::audit::{AuditDraft, OUTCOME_OK};
use crate::auth::{CredentialKind, Denial, Principal};
use crate::db::{ApprovalRequest, ExecutionRow, AWAITING_APPROVAL};

impl Backend {
    /// Who created `principal`'s API token (`None` for other credentials):
    /// a requester may not approve through a token it minted.
    pub(super) async fn token_creator_of(
        &self,
        principal: &Principal,
    ) -> Result<Option<String>, BackendError> {
        if principal.kind != CredentialKind::Token {
            return Ok(None);
        }
        let db = self.db.clone();
        let name = principal.name.clone();
        self.run_db(move || db.token_creator(&name)).await
    }

    /// Executions waiting for approvals (expired ones are ended first).
    pub async fn awaiting_approvals(&self) -> Result<Vec<ApprovalRequest>, BackendError> {
        let db = self.db.clone();
        let waiting = self.run_db(move || db.awaiting_approvals()).await?;
        let now = self.now();
        let mut out = Vec::new();
        for request in waiting {
            if now >= request.rule.expires_at {
                self.expire(&request.execution.exec_id).await?;
            } else {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Ends every request past its TTL as `expired` (the reaper calls this
    /// each round, so an unattended request does not wait forever).
    /// Returns how many ended.
    pub async fn expire_approvals(&self) -> Result<usize, BackendError> {
        let before = {
            let db = self.db.clone();
            self.run_db(move || db.awaiting_approvals()).await?.len()
        };
        if before == 0 {
            return Ok(0);
        }
        let after = self.awaiting_approvals().await?.len();
        Ok(before - after)
    }

    /// Ends `exec_id` as `expired`, audited as the backend's own step.
    async fn expire(&self, exec_id: &str) -> Result<bool, BackendError> {
        let now = self.now();
        let mut audit = AuditDraft::new(
            now,
            "backend",
            AuditSource {
                ip: None,
                kind: "backend".into(),
            },
            "execution.expire",
            OUTCOME_OK,
        );
        audit.target = Some(exec_id.to_owned());
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || db.end_approval(&id, "expired", None, now, Some(audit)))
            .await
    }

    /// The request of `exec_id`, still waiting (an expired one is ended
    /// and refused).
    async fn waiting_request(&self, exec_id: &str) -> Result<ApprovalRequest, BackendError> {
        let db = self.db.clone();
        let id = exec_id.to_owned();
        let request = self
            .run_db(move || db.approval_request(&id))
            .await?
            .ok_or_else(|| {
                BackendError::NotFound(format!("approval request for execution {exec_id}"))
            })?;
        if request.execution.status != AWAITING_APPROVAL {
            return Err(BackendError::Invalid(format!(
                "execution {exec_id} is {}, not awaiting approval",
                request.execution.status
            )));
        }
        let now = self.now();
        if now >= request.rule.expires_at {
            self.expire(exec_id).await?;
            return Err(BackendError::Invalid(format!(
                "the approval request of execution {exec_id} expired at {}",
                request.rule.expires_at.to_rfc3339()
            )));
        }
        Ok(request)
    }

    /// Approves `exec_id` as `approver`, the vote and its audit entry
    /// (when given) in one transaction. When this vote reaches the quorum,
    /// the stored command is published (once: the move out of
    /// `awaiting_approval` happens in the vote's transaction).
    ///
    /// # Errors
    /// [`BackendError::Denied`] for the requester, a second vote, a role
    /// below the rule's; [`BackendError::Invalid`] when the execution is
    /// not waiting (decided, expired); [`BackendError::NotFound`].
    pub async fn approve(
        &self,
        exec_id: &str,
        approver: &Principal,
        audit: Option<AuditDraft>,
    ) -> Result<ExecutionRow, BackendError> {
        let request = self.waiting_request(exec_id).await?;
        let now = self.now();
        let creator = self.token_creator_of(approver).await?;
        decide_approval(
            &request.rule,
            &request.requested_by,
            &request.approvers,
            approver,
            creator.as_deref(),
            now,
        )?;
        let db = self.db.clone();
        let id = exec_id.to_owned();
        let name = approver.name.clone();
        let needed = request.rule.approvals;
        let (stored, moved) = self
            .run_db(move || db.record_approval(&id, &name, needed, now, audit))
            .await?;
        if !stored {
            // Raced: another call decided the request, or this principal's
            // vote landed twice.
            return Err(BackendError::Invalid(format!(
                "execution {exec_id} no longer takes this vote (decided, or already approved by {})",
                approver.name
            )));
        }
        if moved {
            let pending: PendingCommand =
                serde_json::from_str(&request.pending_command).map_err(|source| {
                    BackendError::Corrupt {
                        what: format!("pending command of execution {exec_id}"),
                        source,
                    }
                })?;
            self.publish_command(&pending.command, &pending.subjects)
                .await?;
            let db = self.db.clone();
            let id = exec_id.to_owned();
            self.run_db(move || db.mark_command_published(&id)).await?;
        }
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || db.execution(&id))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("execution {exec_id}")))
    }

    /// Publishes the commands of approved executions that never went out
    /// (the backend stopped between the quorum's commit and the publish).
    /// Agents admit a `request_id` once, so a command that did go out
    /// before the stop runs once all the same. Returns how many were sent.
    pub async fn send_approved_unsent(&self) -> Result<usize, BackendError> {
        let db = self.db.clone();
        let unsent = self.run_db(move || db.approved_unsent()).await?;
        let mut sent = 0;
        for (exec_id, pending) in unsent {
            let pending: PendingCommand =
                serde_json::from_str(&pending).map_err(|source| BackendError::Corrupt {
                    what: format!("pending command of execution {exec_id}"),
                    source,
                })?;
            self.publish_command(&pending.command, &pending.subjects)
                .await?;
            let db = self.db.clone();
            self.run_db(move || db.mark_command_published(&exec_id))
                .await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Denies `exec_id`: it ends `denied` and nothing is published. Any
    /// principal who could approve may deny (the requester too: it
    /// withdraws the request).
    pub async fn deny(
        &self,
        exec_id: &str,
        by: &Principal,
        reason: &str,
        audit: Option<AuditDraft>,
    ) -> Result<ExecutionRow, BackendError> {
        let request = self.waiting_request(exec_id).await?;
        if by.role < request.rule.role && by.name != request.requested_by {
            return Err(Denial::Approval(format!(
                "denying this execution needs the {} role; {} is {}",
                request.rule.role, by.name, by.role
            ))
            .into());
        }
        let now = self.now();
        let db = self.db.clone();
        let id = exec_id.to_owned();
        let who = by.name.clone();
        let why = reason.to_owned();
        let ended = self
            .run_db(move || db.end_approval(&id, "denied", Some((&who, &why)), now, audit))
            .await?;
        if !ended {
            return Err(BackendError::Invalid(format!(
                "execution {exec_id} was decided meanwhile"
            )));
        }
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || db.execution(&id))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("execution {exec_id}")))
    }
}
