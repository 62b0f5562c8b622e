//! Which pcs an execution counted as its targets, and answers from pcs it
//! did not count (an agent that was not known to be online or in the group
//! when the command went out, and answered anyway: it is added to the
//! targets and counted in `late_targets`, so counters never exceed
//! `targeted` and an execution is `completed` only once every pc it
//! counted has answered).

use rusqlite::{params, OptionalExtension};

use super::core::{Db, DbError};

impl Db {
    /// Records the pcs `exec_id` counted as targets when it went out.
    pub fn record_targets(&self, exec_id: &str, pcs: &[String]) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO execution_targets (exec_id, pc_id, counted) VALUES (?1, ?2, 1)",
            )?;
            for pc in pcs {
                insert.execute(params![exec_id, pc])?;
            }
        }
        tx.execute(
            "UPDATE executions SET targets_recorded = 1 WHERE exec_id = ?1",
            [exec_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The pcs of `exec_id`'s targets, each with whether it was counted
    /// when the command went out (`false`: it answered without being
    /// counted).
    pub fn targets(&self, exec_id: &str) -> Result<Vec<(String, bool)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT pc_id, counted FROM execution_targets WHERE exec_id = ?1 ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map([exec_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Counts a first answer of `pc_id` to `exec_id`: a pc the execution did
/// not count becomes a target (`targeted` and `late_targets` go up by one)
/// before the answer moves the counters. Executions recorded before
/// targets were kept are left as they are.
pub(super) fn count_answer(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    pc_id: &str,
) -> Result<(), DbError> {
    let recorded: Option<bool> = tx
        .prepare_cached("SELECT targets_recorded FROM executions WHERE exec_id = ?1")?
        .query_row([exec_id], |r| r.get(0))
        .optional()?;
    if recorded != Some(true) {
        return Ok(());
    }
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO execution_targets (exec_id, pc_id, counted) VALUES (?1, ?2, 0)",
        )?
        .execute(params![exec_id, pc_id])?;
    if added > 0 {
        tx.prepare_cached(
            "UPDATE executions SET targeted = targeted + 1, late_targets = late_targets + 1 WHERE exec_id = ?1",
        )?
        .execute([exec_id])?;
    }
    Ok(())
}
