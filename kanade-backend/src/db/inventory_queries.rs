//! Reads of the inventory and check tables (`db::inventory` writes them):
//! the rows and facts of a job, their history, the fleet's check summary
//! and states, and the answers that could not be projected.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::core::{Db, DbError};

/// One row of an exploded inventory table.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRow {
    /// The pc.
    pub pc_id: String,
    /// The table (`explode[].table`).
    pub table: String,
    /// The row's declared columns.
    pub row: Value,
}

/// A pc's current facts for a job (the scalars of its latest answer).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryFacts {
    /// The pc.
    pub pc_id: String,
    /// The job version that answered.
    pub version: String,
    /// When the answering run finished (RFC 3339, the agent's clock).
    pub finished_at: String,
    /// The top-level fields, less the exploded arrays.
    pub facts: Value,
}

/// One recorded change of an inventory row or tracked scalar.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryChange {
    /// The pc.
    pub pc_id: String,
    /// The table, or `None` for a scalar in `history_scalars`.
    pub table: Option<String>,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// The row's primary key (a JSON array), or the scalar's name.
    pub key: String,
    /// The row or value before (JSON), when there was one.
    pub before: Option<Value>,
    /// The row or value after (JSON), when there is one.
    pub after: Option<Value>,
    /// When the run that saw it finished.
    pub at: String,
}

/// A pc's state for one check.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// The check (`check.name`).
    pub check: String,
    /// The pc.
    pub pc_id: String,
    /// `pass`, `warn`, `fail` or `unknown`.
    pub status: String,
    /// The check's one-line detail.
    pub detail: String,
    /// Since when it has had this status.
    pub since: String,
    /// The job and version that reported it.
    pub job_id: String,
    /// The job version.
    pub version: String,
}

/// The fleet's counts for one check.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// The check.
    pub check: String,
    /// Its label, when the job gave one.
    pub label: Option<String>,
    /// Pcs passing.
    pub pass: u64,
    /// Pcs warning.
    pub warn: u64,
    /// Pcs failing.
    pub fail: u64,
    /// Pcs that could not tell.
    pub unknown: u64,
    /// Known agents without a state for it.
    pub never_ran: u64,
}

/// An answer that could not be projected (the result is stored).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionSkip {
    /// The result.
    pub result_id: String,
    /// The job.
    pub job_id: String,
    /// The pc.
    pub pc_id: String,
    /// The job version.
    pub version: String,
    /// Why it was not projected.
    pub reason: String,
    /// When the backend decided it.
    pub at: String,
}

/// A `check_states` row selected as `check_name, pc_id, status, detail,
/// since, job_id, version`.
pub(super) fn read_check_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckState> {
    Ok(CheckState {
        check: r.get(0)?,
        pc_id: r.get(1)?,
        status: r.get(2)?,
        detail: r.get(3)?,
        since: r.get(4)?,
        job_id: r.get(5)?,
        version: r.get(6)?,
    })
}

fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

impl Db {
    /// The rows of `job`'s exploded tables, by table, pc and key; only
    /// `table`, only `pc`, only rows whose column `field` equals `value`
    /// (compared as text) when given.
    pub fn inventory_rows(
        &self,
        job: &str,
        table: Option<&str>,
        pc: Option<&str>,
        field_equals: Option<(&str, &str)>,
    ) -> Result<Vec<InventoryRow>, DbError> {
        let conn = self.lock();
        let (field, value) = field_equals.map_or((None, None), |(f, v)| (Some(f), Some(v)));
        let mut stmt = conn.prepare(
            "SELECT pc_id, tbl, row FROM inventory_rows
             WHERE job_id = ?1 AND (?2 IS NULL OR tbl = ?2) AND (?3 IS NULL OR pc_id = ?3)
               AND (?4 IS NULL OR CAST(json_extract(row, '$.' || ?4) AS TEXT) = ?5)
             ORDER BY tbl, pc_id, row_key",
        )?;
        let rows = stmt
            .query_map(params![job, table, pc, field, value], |r| {
                Ok(InventoryRow {
                    pc_id: r.get(0)?,
                    table: r.get(1)?,
                    row: json(Some(r.get(2)?)).unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Each pc's current facts for `job` (only `pc` when given; only pcs
    /// whose fact `field` equals `value`, as text, when given).
    pub fn inventory_facts(
        &self,
        job: &str,
        pc: Option<&str>,
        field_equals: Option<(&str, &str)>,
    ) -> Result<Vec<InventoryFacts>, DbError> {
        let conn = self.lock();
        let (field, value) = field_equals.map_or((None, None), |(f, v)| (Some(f), Some(v)));
        let mut stmt = conn.prepare(
            "SELECT pc_id, version, finished_at, facts FROM inventory_facts
             WHERE job_id = ?1 AND (?2 IS NULL OR pc_id = ?2)
               AND (?3 IS NULL OR CAST(json_extract(facts, '$.' || ?3) AS TEXT) = ?4)
             ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map(params![job, pc, field, value], |r| {
                Ok(InventoryFacts {
                    pc_id: r.get(0)?,
                    version: r.get(1)?,
                    finished_at: r.get(2)?,
                    facts: json(Some(r.get(3)?)).unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The recorded changes of `job` (only `pc`, only at or after `since`
    /// when given), oldest first.
    pub fn inventory_history(
        &self,
        job: &str,
        pc: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<InventoryChange>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT pc_id, tbl, change, row_key, before, after, at FROM inventory_history
             WHERE job_id = ?1 AND (?2 IS NULL OR pc_id = ?2) AND (?3 IS NULL OR at >= ?3)
             ORDER BY at, id",
        )?;
        let rows = stmt
            .query_map(params![job, pc, since], |r| {
                Ok(InventoryChange {
                    pc_id: r.get(0)?,
                    table: r.get(1)?,
                    change: r.get(2)?,
                    key: r.get(3)?,
                    before: json(r.get(4)?),
                    after: json(r.get(5)?),
                    at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Per check (only `check` when given): how many pcs pass, warn, fail,
    /// cannot tell, and how many known agents never reported it.
    pub fn check_summary(&self, check: Option<&str>) -> Result<Vec<CheckSummary>, DbError> {
        let conn = self.lock();
        let agents: u64 = conn.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0))?;
        let mut stmt = conn.prepare(
            "SELECT check_name, MAX(label),
                    SUM(status = 'pass'), SUM(status = 'warn'), SUM(status = 'fail'), SUM(status = 'unknown'),
                    SUM(pc_id IN (SELECT pc_id FROM agents))
             FROM check_states WHERE (?1 IS NULL OR check_name = ?1)
             GROUP BY check_name ORDER BY check_name",
        )?;
        let rows = stmt
            .query_map([check], |r| {
                let reported: u64 = r.get(6)?;
                Ok(CheckSummary {
                    check: r.get(0)?,
                    label: r.get(1)?,
                    pass: r.get(2)?,
                    warn: r.get(3)?,
                    fail: r.get(4)?,
                    unknown: r.get(5)?,
                    never_ran: agents.saturating_sub(reported),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The pcs' states for `check`, by pc (only those at `fail` when
    /// `failing`).
    pub fn check_states(&self, check: &str, failing: bool) -> Result<Vec<CheckState>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT check_name, pc_id, status, detail, since, job_id, version FROM check_states
             WHERE check_name = ?1 AND (?2 = 0 OR status = 'fail')
             ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map(params![check, failing], read_check_state)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Answers of `job` (all jobs when `None`) that could not be
    /// projected, newest first, at most `limit`.
    pub fn projection_skips(
        &self,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProjectionSkip>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT result_id, job_id, pc_id, version, reason, at FROM projection_skips
             WHERE (?1 IS NULL OR job_id = ?1) ORDER BY at DESC, result_id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![job, limit as i64], |r| {
                Ok(ProjectionSkip {
                    result_id: r.get(0)?,
                    job_id: r.get(1)?,
                    pc_id: r.get(2)?,
                    version: r.get(3)?,
                    reason: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
