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

    /// A read that succeeds when the database answers within `patience`.
    /// The ping takes the connection only when it is free (asking again
    /// every 10 ms), so probes never queue behind a busy store; a
    /// connection held the whole time is a store that does not answer.
    ///
    /// # Errors
    /// The read's error, or [`DbError::Busy`] when the connection stayed
    /// taken for `patience`.
    pub fn ping(&self, patience: std::time::Duration) -> Result<(), DbError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(conn) = self.try_lock() {
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
                return Ok(());
            }
            if started.elapsed() >= patience {
                return Err(DbError::Busy(patience));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
