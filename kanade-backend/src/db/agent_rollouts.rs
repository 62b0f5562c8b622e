//! Agent rollouts (self-update): which version was rolled out to which
//! `agent_config` scopes, what each scope named before (what a halt
//! restores), the error budget and whether it halted.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::core::{Db, DbError};

/// One agent rollout.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRolloutRow {
    /// Its id (newest is current).
    pub id: i64,
    /// The version rolled out.
    pub version: String,
    /// `agent_config` key → the `target_version` it had before (`None`:
    /// none).
    pub previous: std::collections::BTreeMap<String, Option<String>>,
    /// Hosts that may quarantine the version before the rollout halts
    /// (`None`: no budget).
    pub max_errors: Option<u32>,
    /// `rolling` or `halted`.
    pub status: String,
    /// Why it halted.
    pub reason: Option<String>,
    /// When it was set (RFC 3339).
    pub created_at: String,
}

impl Db {
    /// Records a rollout (the current one from now on); returns its id.
    pub fn record_agent_rollout(
        &self,
        version: &str,
        previous: &std::collections::BTreeMap<String, Option<String>>,
        max_errors: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO agent_rollouts (version, previous, max_errors, status, created_at)
             VALUES (?1, ?2, ?3, 'rolling', ?4)",
            params![
                version,
                serde_json::to_string(previous).unwrap_or_default(),
                max_errors,
                now.to_rfc3339()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The newest rollout, if any.
    pub fn current_agent_rollout(&self) -> Result<Option<AgentRolloutRow>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, version, previous, max_errors, status, reason, created_at
                 FROM agent_rollouts ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    let previous: String = r.get(2)?;
                    Ok(AgentRolloutRow {
                        id: r.get(0)?,
                        version: r.get(1)?,
                        previous: serde_json::from_str(&previous).unwrap_or_default(),
                        max_errors: r.get(3)?,
                        status: r.get(4)?,
                        reason: r.get(5)?,
                        created_at: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Marks rollout `id` halted for `reason`; false if it was not rolling.
    pub fn halt_agent_rollout(&self, id: i64, reason: &str) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE agent_rollouts SET status = 'halted', reason = ?2 WHERE id = ?1 AND status = 'rolling'",
            params![id, reason],
        )? > 0)
    }

    /// The pcs whose heartbeats report `version` quarantined.
    pub fn pcs_quarantining(&self, version: &str) -> Result<Vec<String>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT pc_id, quarantined_versions FROM agents WHERE quarantined_versions IS NOT NULL ORDER BY pc_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut pcs = Vec::new();
        for row in rows {
            let (pc, list) = row?;
            let list: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
            if list.iter().any(|v| v == version) {
                pcs.push(pc);
            }
        }
        Ok(pcs)
    }
}
