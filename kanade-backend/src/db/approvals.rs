//! Approval requests: an execution waiting in `awaiting_approval` with its
//! rule, its requester and the command to publish on quorum, and the votes
//! (one per principal: the table's key makes a second vote impossible).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::core::{Db, DbError};
use super::executions::ExecutionRow;
use crate::approval::ApprovalRule;
use crate::audit::AuditDraft;

/// Who approved under `key` (an execution id, or a schedule version's
/// vote key), in the order they did.
pub(super) fn approvers(conn: &rusqlite::Connection, key: &str) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT approver FROM approvals WHERE exec_id = ?1 AND decision = 'approve' ORDER BY at, approver",
    )?;
    let approvers = stmt
        .query_map([key], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(approvers)
}

/// The status of an execution waiting for approvals.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";

/// An execution waiting for (or done with) approvals.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The execution.
    pub execution: ExecutionRow,
    /// Who asked for it.
    pub requested_by: String,
    /// The rule it waits under.
    pub rule: ApprovalRule,
    /// Who approved so far.
    pub approvers: Vec<String>,
    /// The command and subjects to publish on quorum (JSON).
    #[serde(skip)]
    pub pending_command: String,
}

impl Db {
    /// Records an execution that waits for approvals instead of going out.
    pub fn insert_awaiting_execution(
        &self,
        row: &ExecutionRow,
        requested_by: &str,
        rule: &ApprovalRule,
        pending_command: &str,
    ) -> Result<(), DbError> {
        let rule = serde_json::to_string(rule).unwrap_or_default();
        self.lock().execute(
            "INSERT INTO executions (exec_id, job_id, version, request_id, target, targeted, status, created_at, reap_after_secs, requested_by, approval, pending_command, command_published)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)",
            params![row.exec_id, row.job_id, row.version, row.request_id, row.target, row.targeted, AWAITING_APPROVAL, row.created_at, row.reap_after_secs, requested_by, rule, pending_command],
        )?;
        Ok(())
    }

    /// The approval request of an execution (any status), if it had one.
    pub fn approval_request(&self, exec_id: &str) -> Result<Option<ApprovalRequest>, DbError> {
        let Some(execution) = self.execution(exec_id)? else {
            return Ok(None);
        };
        let conn = self.lock();
        let found = conn
            .query_row(
                "SELECT requested_by, approval, pending_command FROM executions WHERE exec_id = ?1 AND approval IS NOT NULL",
                [exec_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()?;
        let Some((requested_by, rule, pending_command)) = found else {
            return Ok(None);
        };
        let Ok(rule) = serde_json::from_str(&rule) else {
            return Ok(None);
        };
        let approvers = approvers(&conn, exec_id)?;
        Ok(Some(ApprovalRequest {
            execution,
            requested_by,
            rule,
            approvers,
            pending_command,
        }))
    }

    /// Every execution still waiting for approvals, oldest first.
    pub fn awaiting_approvals(&self) -> Result<Vec<ApprovalRequest>, DbError> {
        let ids: Vec<String> = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT exec_id FROM executions WHERE status = ?1 ORDER BY created_at",
            )?;
            let ids = stmt
                .query_map([AWAITING_APPROVAL], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(request) = self.approval_request(&id)? {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Stores an approval (and its audit entry) while the execution still
    /// waits; when the stored approvals (counted inside the transaction)
    /// reach `needed`, moves it from `awaiting_approval` to `pending` in the
    /// same transaction, so concurrent votes can neither both miss nor both
    /// make the quorum. Returns whether the vote was
    /// stored and whether this call made the move (exactly one caller
    /// can). A principal's second vote, or a vote on a request no longer
    /// waiting, stores nothing.
    pub fn record_approval(
        &self,
        exec_id: &str,
        approver: &str,
        needed: u32,
        now: DateTime<Utc>,
        audit: Option<AuditDraft>,
    ) -> Result<(bool, bool), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let waiting: bool = tx
            .query_row(
                "SELECT status = ?2 FROM executions WHERE exec_id = ?1",
                params![exec_id, AWAITING_APPROVAL],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false);
        if !waiting {
            return Ok((false, false));
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO approvals (exec_id, approver, decision, at) VALUES (?1, ?2, 'approve', ?3)",
            params![exec_id, approver, now.to_rfc3339()],
        )? == 1;
        let approvals = approvers(&tx, exec_id)?.len() as i64;
        let moved = if inserted && approvals >= i64::from(needed) {
            tx.execute(
                "UPDATE executions SET status = 'pending' WHERE exec_id = ?1 AND status = ?2",
                params![exec_id, AWAITING_APPROVAL],
            )? == 1
        } else {
            false
        };
        self.commit_audited(tx, inserted, audit)?;
        if moved {
            self.executions_changed();
        }
        Ok((inserted, moved))
    }

    /// Records that an approved execution's command went out.
    pub fn mark_command_published(&self, exec_id: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE executions SET command_published = 1 WHERE exec_id = ?1",
            [exec_id],
        )?;
        Ok(())
    }

    /// Approved executions whose command has not gone out yet (the backend
    /// stopped between the quorum and the publish): `(exec_id, pending
    /// command JSON)`, oldest first.
    pub fn approved_unsent(&self) -> Result<Vec<(String, String)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT exec_id, pending_command FROM executions
             WHERE command_published = 0 AND status = 'pending' AND pending_command IS NOT NULL
             ORDER BY created_at",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Ends a waiting request as `denied` (with the denier's vote and
    /// reason) or `expired`, with its audit entry in the same transaction.
    /// Returns whether it was still waiting.
    pub fn end_approval(
        &self,
        exec_id: &str,
        status: &str,
        by: Option<(&str, &str)>,
        now: DateTime<Utc>,
        audit: Option<AuditDraft>,
    ) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "UPDATE executions SET status = ?2 WHERE exec_id = ?1 AND status = ?3",
            params![exec_id, status, AWAITING_APPROVAL],
        )? == 1;
        if let (true, Some((who, reason))) = (moved, by) {
            tx.execute(
                "INSERT OR REPLACE INTO approvals (exec_id, approver, decision, reason, at) VALUES (?1, ?2, 'deny', ?3, ?4)",
                params![exec_id, who, reason, now.to_rfc3339()],
            )?;
        }
        self.commit_audited(tx, moved, audit)?;
        if moved {
            self.executions_changed();
        }
        Ok(moved)
    }
}
