//! Executions: one row per fired command, with counters that results and
//! runs move on (see [`adjust_counters`]).

use rusqlite::params;
use serde::Serialize;

use super::core::{Db, DbError};

/// One execution row.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecutionRow {
    /// Execution id.
    pub exec_id: String,
    /// Job.
    pub job_id: String,
    /// Job version.
    pub version: String,
    /// Request id of its command.
    pub request_id: String,
    /// Target as JSON.
    pub target: String,
    /// Pcs addressed: every pc named explicitly, plus the agents of its
    /// groups (or all agents) seen within the online window when it went
    /// out, plus any pc that answered without being counted (see
    /// `late_targets`).
    pub targeted: i64,
    /// pending | running | completed.
    pub status: String,
    /// When it was created.
    pub created_at: String,
    /// Runs that started: non-skipped results plus runs still in flight.
    pub started: i64,
    /// Results with exit 0.
    pub succeeded: i64,
    /// Results with a failure.
    pub failed: i64,
    /// Skipped results.
    pub skipped: i64,
    /// How long after its start a run without a result is reaped.
    pub reap_after_secs: i64,
    /// Pcs that answered without having been counted when the command went
    /// out (they are included in `targeted`).
    #[serde(default)]
    pub late_targets: i64,
    /// The schedule that fired it (`None`: an exec).
    #[serde(default)]
    pub schedule_id: Option<String>,
}

/// Which executions to list ([`Db::executions_matching`]); `None` fields
/// match everything.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ExecutionFilter {
    /// Only this job's.
    #[serde(default)]
    pub job: Option<String>,
    /// Only those this schedule fired.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Only those in this status (`pending`, `running`, `completed`,
    /// `cancelled`, `failed`, `awaiting_approval`, and for rollouts
    /// `halted`, `aborted`).
    #[serde(default)]
    pub status: Option<String>,
    /// At most this many, newest first (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl Db {
    /// Records a new execution.
    pub fn insert_execution(&self, row: &ExecutionRow) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO executions (exec_id, job_id, version, request_id, target, targeted, status, created_at, reap_after_secs, schedule_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![row.exec_id, row.job_id, row.version, row.request_id, row.target, row.targeted, row.status, row.created_at, row.reap_after_secs, row.schedule_id],
        )?;
        Ok(())
    }

    /// One execution.
    pub fn execution(&self, exec_id: &str) -> Result<Option<ExecutionRow>, DbError> {
        Ok(self
            .executions_where("WHERE exec_id = ?1", [exec_id])?
            .into_iter()
            .next())
    }

    /// Every execution, newest first.
    pub fn executions(&self) -> Result<Vec<ExecutionRow>, DbError> {
        self.executions_where("", [])
    }

    /// The executions `filter` selects, newest first.
    pub fn executions_matching(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionRow>, DbError> {
        let mut rows = self.executions_where(
            "WHERE (?1 IS NULL OR job_id = ?1) AND (?2 IS NULL OR schedule_id = ?2) AND (?3 IS NULL OR status = ?3)",
            params![filter.job, filter.schedule, filter.status],
        )?;
        rows.truncate(filter.limit.unwrap_or(100));
        Ok(rows)
    }

    fn executions_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<ExecutionRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT exec_id, job_id, version, request_id, target, targeted, status, created_at, started, succeeded, failed, skipped, reap_after_secs, late_targets, schedule_id
             FROM executions {filter} ORDER BY created_at DESC"
        ))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok(ExecutionRow {
                    exec_id: r.get(0)?,
                    job_id: r.get(1)?,
                    version: r.get(2)?,
                    request_id: r.get(3)?,
                    target: r.get(4)?,
                    targeted: r.get(5)?,
                    status: r.get(6)?,
                    created_at: r.get(7)?,
                    started: r.get(8)?,
                    succeeded: r.get(9)?,
                    failed: r.get(10)?,
                    skipped: r.get(11)?,
                    reap_after_secs: r.get(12)?,
                    late_targets: r.get(13)?,
                    schedule_id: r.get(14)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Marks an execution cancelled (after a kill).
    pub fn set_status(&self, exec_id: &str, status: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE executions SET status = ?2 WHERE exec_id = ?1",
            params![exec_id, status],
        )?;
        self.executions_changed();
        Ok(())
    }
}

impl ExecutionRow {
    /// A short fingerprint of what a waiting client sees change (status
    /// and counters): `GET /api/executions/{id}?after=<fingerprint>&wait=30s`
    /// returns as soon as it differs. 16 hex digits (of a sha256).
    pub fn fingerprint(&self) -> String {
        let seen = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.status,
            self.version,
            self.targeted,
            self.started,
            self.succeeded,
            self.failed,
            self.skipped,
            self.late_targets
        );
        let mut digest = crate::audit::chain::sha256_hex(seen.as_bytes());
        digest.truncate(16);
        digest
    }
}

/// What one result or run adds to an execution's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    pub(super) skipped: i64,
    pub(super) started: i64,
}

impl Counters {
    /// A stored result: skipped, or started and then succeeded or failed.
    pub(super) fn of_result(skipped: bool, exit_code: i64) -> Self {
        Self {
            succeeded: i64::from(!skipped && exit_code == 0),
            failed: i64::from(!skipped && exit_code != 0),
            skipped: i64::from(skipped),
            started: i64::from(!skipped),
        }
    }

    pub(super) fn minus(self, other: Self) -> Self {
        Self {
            succeeded: self.succeeded - other.succeeded,
            failed: self.failed - other.failed,
            skipped: self.skipped - other.skipped,
            started: self.started - other.started,
        }
    }
}

/// Applies `delta` to an execution's counters and moves its status on.
pub(super) fn adjust_counters(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    delta: Counters,
) -> Result<(), DbError> {
    // One statement: the right-hand sides read the row as it was, so the
    // status is decided on the counters plus the delta. The ended statuses
    // are compared one by one: an `IN (…)` list here builds a temporary
    // b-tree on every call, and this runs once per stored result.
    tx.prepare_cached(
        "UPDATE executions SET
            succeeded = succeeded + ?2, failed = failed + ?3, skipped = skipped + ?4,
            started = started + ?5,
            status = CASE
                WHEN status = 'cancelled' OR status = 'halted' OR status = 'aborted' THEN status
                WHEN succeeded + ?2 + failed + ?3 + skipped + ?4 >= targeted THEN 'completed'
                WHEN started + ?5 > 0 OR succeeded + ?2 + failed + ?3 + skipped + ?4 > 0 THEN 'running'
                ELSE status END
         WHERE exec_id = ?1",
    )?
    .execute(params![
        exec_id,
        delta.succeeded,
        delta.failed,
        delta.skipped,
        delta.started
    ])?;
    Ok(())
}
