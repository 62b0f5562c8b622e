//! Schedule approvals: a schedule of a job that requires approval fires
//! only once its approvers said yes, once per job version (a new version
//! is a new request). Votes share the `approvals` table, keyed
//! `schedule:<id>@<version>`.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::approvals::{approvers, AWAITING_APPROVAL};
use super::core::{Db, DbError};
use crate::approval::ApprovalRule;
use crate::audit::AuditDraft;

/// The status of a schedule version its approvers approved.
pub const APPROVED: &str = "approved";

/// A schedule version's approval request.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleApproval {
    /// The schedule.
    pub schedule_id: String,
    /// The job version the approval is for.
    pub version: String,
    /// Who applied the schedule.
    pub requested_by: String,
    /// The rule it waits under.
    pub rule: ApprovalRule,
    /// `awaiting_approval`, `approved`, `denied` or `expired`.
    pub status: String,
    /// Who approved so far.
    pub approvers: Vec<String>,
}

/// The key of a schedule version's votes in the `approvals` table.
pub fn vote_key(schedule_id: &str, version: &str) -> String {
    format!("schedule:{schedule_id}@{version}")
}

impl Db {
    /// Opens a request for `(schedule_id, version)` unless one is waiting
    /// or approved already (a denied or expired one is replaced). Returns
    /// the request now on record.
    pub fn request_schedule_approval(
        &self,
        schedule_id: &str,
        version: &str,
        requested_by: &str,
        rule: &ApprovalRule,
        now: DateTime<Utc>,
    ) -> Result<ScheduleApproval, DbError> {
        {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM schedule_approvals WHERE schedule_id = ?1 AND version = ?2",
                    params![schedule_id, version],
                    |r| r.get(0),
                )
                .optional()?;
            let reopen =
                !matches!(status.as_deref(), Some(s) if s == AWAITING_APPROVAL || s == APPROVED);
            if reopen {
                tx.execute(
                    "DELETE FROM approvals WHERE exec_id = ?1",
                    [vote_key(schedule_id, version)],
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO schedule_approvals (schedule_id, version, requested_by, approval, status, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        schedule_id,
                        version,
                        requested_by,
                        serde_json::to_string(rule).unwrap_or_default(),
                        AWAITING_APPROVAL,
                        now.to_rfc3339()
                    ],
                )?;
            }
            tx.commit()?;
        }
        self.schedule_approval(schedule_id, version)?
            .ok_or(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// The request of `(schedule_id, version)`, if any.
    pub fn schedule_approval(
        &self,
        schedule_id: &str,
        version: &str,
    ) -> Result<Option<ScheduleApproval>, DbError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT requested_by, approval, status FROM schedule_approvals WHERE schedule_id = ?1 AND version = ?2",
                params![schedule_id, version],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()?;
        let Some((requested_by, rule, status)) = row else {
            return Ok(None);
        };
        let Ok(rule) = serde_json::from_str(&rule) else {
            return Ok(None);
        };
        let approvers = approvers(&conn, &vote_key(schedule_id, version))?;
        Ok(Some(ScheduleApproval {
            schedule_id: schedule_id.to_owned(),
            version: version.to_owned(),
            requested_by,
            rule,
            status,
            approvers,
        }))
    }

    /// Every schedule version still waiting for approvals.
    pub fn awaiting_schedule_approvals(&self) -> Result<Vec<ScheduleApproval>, DbError> {
        let keys: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn.prepare(
                "SELECT schedule_id, version FROM schedule_approvals WHERE status = ?1 ORDER BY created_at",
            )?;
            let keys = stmt
                .query_map([AWAITING_APPROVAL], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            keys
        };
        let mut out = Vec::new();
        for (id, version) in keys {
            if let Some(request) = self.schedule_approval(&id, &version)? {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Stores a vote (and its audit entry) while the request waits; when
    /// the votes counted in the transaction reach `needed`, marks it
    /// `approved`. Returns whether the vote was stored and whether it
    /// approved the request.
    pub fn record_schedule_approval(
        &self,
        schedule_id: &str,
        version: &str,
        approver: &str,
        needed: u32,
        now: DateTime<Utc>,
        audit: Option<AuditDraft>,
    ) -> Result<(bool, bool), DbError> {
        let key = vote_key(schedule_id, version);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let waiting: bool = tx
            .query_row(
                "SELECT status = ?3 FROM schedule_approvals WHERE schedule_id = ?1 AND version = ?2",
                params![schedule_id, version, AWAITING_APPROVAL],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false);
        if !waiting {
            return Ok((false, false));
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO approvals (exec_id, approver, decision, at) VALUES (?1, ?2, 'approve', ?3)",
            params![key, approver, now.to_rfc3339()],
        )? == 1;
        let count = approvers(&tx, &key)?.len() as i64;
        let approved = inserted
            && count >= i64::from(needed)
            && tx.execute(
                "UPDATE schedule_approvals SET status = ?3 WHERE schedule_id = ?1 AND version = ?2 AND status = ?4",
                params![schedule_id, version, APPROVED, AWAITING_APPROVAL],
            )? == 1;
        self.commit_audited(tx, inserted, audit)?;
        Ok((inserted, approved))
    }

    /// Ends a waiting request as `denied` or `expired` (with its audit
    /// entry). Returns whether it was waiting.
    pub fn end_schedule_approval(
        &self,
        schedule_id: &str,
        version: &str,
        status: &str,
        audit: Option<AuditDraft>,
    ) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "UPDATE schedule_approvals SET status = ?3 WHERE schedule_id = ?1 AND version = ?2 AND status = ?4",
            params![schedule_id, version, status, AWAITING_APPROVAL],
        )? == 1;
        self.commit_audited(tx, moved, audit)?;
        Ok(moved)
    }

    /// Whether `(schedule_id, version)` is approved.
    pub fn schedule_approved(&self, schedule_id: &str, version: &str) -> Result<bool, DbError> {
        Ok(self
            .schedule_approval(schedule_id, version)?
            .is_some_and(|a| a.status == APPROVED))
    }
}
