//! Whole-store figures for `/metrics` and `/readyz`: agent and execution
//! counts, the audit trail's length, and a trivial read that tells the
//! database answers.

use chrono::{DateTime, Utc};

use super::core::{Db, DbError};

impl Db {
    /// (agents known, agents seen at or after `online_since`).
    pub fn agent_counts(&self, online_since: DateTime<Utc>) -> Result<(i64, i64), DbError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT count(*), coalesce(sum(last_seen >= ?1), 0) FROM agents",
            [online_since.to_rfc3339()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Executions by status, by status name.
    pub fn execution_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM executions GROUP BY status ORDER BY status")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Entries in the audit trail: its last seq (the chain numbers its
    /// entries 1, 2, … with no gaps, which verification checks), read from
    /// the key instead of counting rows.
    pub fn audit_count(&self) -> Result<i64, DbError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))?)
    }

    /// A read that succeeds when the database answers. A connection busy
    /// with other work is answering: the ping does not queue behind it
    /// (probes must not pile up on a loaded store).
    pub fn ping(&self) -> Result<(), DbError> {
        let Some(conn) = self.try_lock() else {
            return Ok(());
        };
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }
}
