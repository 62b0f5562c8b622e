//! One pc seen whole, for the console's pc page: its recent results (no
//! output: that is read per execution), its current check states and its
//! current inventory facts for every job that reports them.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::core::{Db, DbError};
use super::inventory_queries::{read_check_state, CheckState};

/// One of a pc's recent results, without its output.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcResult {
    /// The execution it answered, when known.
    pub exec_id: Option<String>,
    /// That execution's job.
    pub job_id: Option<String>,
    /// That execution's job version.
    pub version: Option<String>,
    /// The script's exit code (DESIGN §7's reserved codes included).
    pub exit_code: i64,
    /// The agent skipped it (a gate said no).
    pub skipped: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

/// A pc's current facts from one inventory job.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcFacts {
    /// The job whose answer they are.
    pub job_id: String,
    /// That job's version.
    pub version: String,
    /// When the answer finished (RFC 3339).
    pub finished_at: String,
    /// The facts (the answer's top-level fields less exploded arrays).
    pub facts: Value,
}

impl Db {
    /// `pc`'s newest `limit` results, newest first.
    pub fn pc_results(&self, pc: &str, limit: usize) -> Result<Vec<PcResult>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT r.exec_id, e.job_id, e.version, r.exit_code, r.skipped, r.started_at, r.finished_at
             FROM results r LEFT JOIN executions e ON e.exec_id = r.exec_id
             WHERE r.pc_id = ?1 ORDER BY r.finished_at DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![pc, limit], |r| {
                Ok(PcResult {
                    exec_id: r.get(0)?,
                    job_id: r.get(1)?,
                    version: r.get(2)?,
                    exit_code: r.get(3)?,
                    skipped: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// `pc`'s current state in every check, by check name.
    pub fn pc_check_states(&self, pc: &str) -> Result<Vec<CheckState>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT check_name, pc_id, status, detail, since, job_id, version FROM check_states
             WHERE pc_id = ?1 ORDER BY check_name",
        )?;
        let rows = stmt
            .query_map([pc], read_check_state)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// `pc`'s current facts from every inventory job, by job.
    pub fn pc_facts(&self, pc: &str) -> Result<Vec<PcFacts>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT job_id, version, finished_at, facts FROM inventory_facts
             WHERE pc_id = ?1 ORDER BY job_id",
        )?;
        let rows = stmt
            .query_map([pc], |r| {
                let facts: String = r.get(3)?;
                Ok(PcFacts {
                    job_id: r.get(0)?,
                    version: r.get(1)?,
                    finished_at: r.get(2)?,
                    facts: serde_json::from_str(&facts).unwrap_or(Value::String(facts)),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
