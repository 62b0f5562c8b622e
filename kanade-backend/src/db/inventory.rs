//! Stores what a result of an `inventory:` or `check:` job projects to
//! (`crate::inventory`), in the transaction that stores the result: the
//! pc's facts and table rows (replaced whole), their history, the pc's
//! check state and its transitions; or, when the answer cannot be
//! projected, the reason (`projection_skips`) — the result itself is kept
//! either way.
//!
//! Ordering: a pc's stored answer is replaced only by one of a newer job
//! version, or of the same version that finished later
//! ([`compare_versions`], then `finished_at`), so a late result of an old
//! version never overwrites a newer one's facts.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use kanade_core::wire::{CheckHint, ExecResult};
use rusqlite::{params, OptionalExtension, Transaction};

use super::core::{Db, DbError};
use crate::inventory::project::{
    check_outcome, compare_versions, diff_rows, diff_scalars, project_inventory, RowChange, Rows,
};
use crate::inventory::spec::InventoryHint;

impl Db {
    /// Records the `inventory:` and `check:` hints of a job version, so
    /// its results can be projected (done when the job is applied).
    pub fn record_job_hints(
        &self,
        job_id: &str,
        version: &str,
        inventory: Option<&InventoryHint>,
        check: Option<&CheckHint>,
    ) -> Result<(), DbError> {
        let encode = |v: Option<String>| v.filter(|s| s != "null");
        self.lock().execute(
            "INSERT OR REPLACE INTO job_hints (job_id, version, inventory, check_hint) VALUES (?1, ?2, ?3, ?4)",
            params![
                job_id,
                version,
                encode(inventory.and_then(|h| serde_json::to_string(h).ok())),
                encode(check.and_then(|h| serde_json::to_string(h).ok())),
            ],
        )?;
        Ok(())
    }
}

impl Db {
    /// The job other than `job_id` whose check is named `check`, if any:
    /// a check's states are kept by name, so one name has one job.
    pub fn check_owner(&self, check: &str, job_id: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT job_id FROM job_hints WHERE json_extract(check_hint, '$.name') = ?1 AND job_id != ?2 LIMIT 1",
                params![check, job_id],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// Whether an answer ordered `(version, order)` may replace the stored
/// one: a newer job version, or the same version in a later execution (by
/// the backend's clock, so an agent's wrong clock cannot freeze its
/// facts), then a later finish.
fn newer(version: &str, order: &str, stored: Option<&(String, String)>) -> bool {
    match stored {
        None => true,
        Some((stored_version, stored_order)) => match compare_versions(version, stored_version) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => order >= stored_order.as_str(),
        },
    }
}

/// A time as fixed-width RFC 3339 (nanoseconds, `Z`), so stored times
/// order as text; an unreadable one sorts first.
fn sortable(time: &str) -> String {
    DateTime::parse_from_rfc3339(time)
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
        .unwrap_or_default()
}

/// Projects `result` if its job has hints. Called by `store_in` after the
/// result row is written; returns whether a check alert was queued.
pub(super) fn project_in(
    tx: &Transaction<'_>,
    result: &ExecResult,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let Some(exec_id) = &result.exec_id else {
        return Ok(false);
    };
    // The job and version the execution ran (the backend's record, not
    // what the agent says) and their hints: one lookup, none for most jobs.
    type Hints = (String, String, String, Option<String>, Option<String>);
    let hints: Option<Hints> = tx
        .prepare_cached(
            "SELECT e.job_id, e.version, e.created_at, h.inventory, h.check_hint FROM executions e
             JOIN job_hints h ON h.job_id = e.job_id AND h.version = e.version
             WHERE e.exec_id = ?1",
        )?
        .query_row([exec_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((job_id, version, created_at, inventory, check)) = hints else {
        return Ok(false);
    };
    let mut alerted = false;
    let finished_at = result
        .finished_at
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let answer = Answer {
        job_id: &job_id,
        version: &version,
        result,
        order: format!("{}|{finished_at}", sortable(&created_at)),
        finished_at,
    };
    if let Some(hint) = inventory.and_then(|h| serde_json::from_str::<InventoryHint>(&h).ok()) {
        let outcome = if result.skipped || result.exit_code != 0 {
            Err(format!(
                "the run did not succeed (exit {}): only a successful run's output is inventory",
                result.exit_code
            ))
        } else {
            project_inventory(&hint, &result.stdout)
        };
        match outcome {
            Ok(projection) => store_inventory(tx, &answer, &hint, projection)?,
            Err(reason) => skip(tx, &answer, "inventory", &reason, now)?,
        }
    }
    if let Some(hint) = check.and_then(|h| serde_json::from_str::<CheckHint>(&h).ok()) {
        let outcome = if result.skipped || result.exit_code < 0 {
            Err(format!(
                "the check did not run to the end (exit {})",
                result.exit_code
            ))
        } else {
            check_outcome(&hint, &result.stdout)
        };
        match outcome {
            Ok((status, detail)) => {
                alerted = store_check(tx, &answer, &hint, status.as_str(), &detail)?;
            }
            Err(reason) => skip(tx, &answer, "check", &reason, now)?,
        }
    }
    Ok(alerted)
}

struct Answer<'a> {
    job_id: &'a str,
    version: &'a str,
    result: &'a ExecResult,
    /// When the run finished (fixed-width RFC 3339).
    finished_at: String,
    /// Orders answers of one version: the execution's creation (backend
    /// clock), then the finish.
    order: String,
}

fn skip(
    tx: &Transaction<'_>,
    answer: &Answer<'_>,
    hint: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO projection_skips (result_id, hint, job_id, pc_id, version, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        answer.result.result_id,
        hint,
        answer.job_id,
        answer.result.pc_id,
        answer.version,
        reason,
        now.to_rfc3339()
    ])?;
    Ok(())
}

fn store_inventory(
    tx: &Transaction<'_>,
    answer: &Answer<'_>,
    hint: &InventoryHint,
    projection: crate::inventory::project::InventoryProjection,
) -> Result<(), DbError> {
    let pc = &answer.result.pc_id;
    let stored: Option<(String, String, String)> = tx
        .prepare_cached(
            "SELECT version, order_key, facts FROM inventory_facts WHERE job_id = ?1 AND pc_id = ?2",
        )?
        .query_row(params![answer.job_id, pc], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let order = stored.as_ref().map(|(v, f, _)| (v.clone(), f.clone()));
    if !newer(answer.version, &answer.order, order.as_ref()) {
        return Ok(());
    }
    let history = |tx: &Transaction<'_>,
                   table: Option<&str>,
                   change: &str,
                   key: &str,
                   before: Option<String>,
                   after: Option<String>| {
        tx.prepare_cached(
            "INSERT INTO inventory_history (job_id, tbl, pc_id, change, row_key, before, after, at, result_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            answer.job_id,
            table,
            pc,
            change,
            key,
            before,
            after,
            answer.finished_at,
            answer.result.result_id
        ])
        .map(|_| ())
    };
    // Scalars with history: compared with the stored facts.
    if let Some((_, _, facts)) = &stored {
        let old = serde_json::from_str(facts).unwrap_or_default();
        for (name, before, after) in diff_scalars(&hint.history_scalars, &old, &projection.facts) {
            history(
                tx,
                None,
                "changed",
                &name,
                Some(before.to_string()),
                Some(after.to_string()),
            )?;
        }
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO inventory_facts (job_id, pc_id, version, finished_at, order_key, result_id, facts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        answer.job_id,
        pc,
        answer.version,
        answer.finished_at,
        answer.order,
        answer.result.result_id,
        serde_json::Value::Object(projection.facts).to_string()
    ])?;
    for explode in &hint.explode {
        let new = projection
            .tables
            .get(&explode.table)
            .cloned()
            .unwrap_or_default();
        let old = stored_rows(tx, answer.job_id, &explode.table, pc)?;
        if explode.track_history && stored.is_some() {
            for change in diff_rows(&old, &new) {
                let (kind, key, before, after) = match change {
                    RowChange::Added { key, row } => ("added", key, None, Some(row)),
                    RowChange::Removed { key, row } => ("removed", key, Some(row), None),
                    RowChange::Changed { key, before, after } => {
                        ("changed", key, Some(before), Some(after))
                    }
                };
                let text = |row: Option<crate::inventory::project::Row>| {
                    row.map(|r| serde_json::Value::Object(r).to_string())
                };
                history(
                    tx,
                    Some(&explode.table),
                    kind,
                    &key,
                    text(before),
                    text(after),
                )?;
            }
        }
        // The pc's rows are replaced as a whole.
        tx.prepare_cached(
            "DELETE FROM inventory_rows WHERE job_id = ?1 AND tbl = ?2 AND pc_id = ?3",
        )?
        .execute(params![answer.job_id, explode.table, pc])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO inventory_rows (job_id, tbl, pc_id, row_key, row) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (key, row) in new {
            insert.execute(params![
                answer.job_id,
                explode.table,
                pc,
                key,
                serde_json::Value::Object(row).to_string()
            ])?;
        }
    }
    // Tables the current version no longer explodes are emptied.
    let kept: Vec<&str> = hint.explode.iter().map(|e| e.table.as_str()).collect();
    let stale: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT tbl FROM inventory_rows WHERE job_id = ?1 AND pc_id = ?2")?
        .query_map(params![answer.job_id, pc], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?
        .into_iter()
        .filter(|t| !kept.contains(&t.as_str()))
        .collect();
    for table in stale {
        tx.prepare_cached(
            "DELETE FROM inventory_rows WHERE job_id = ?1 AND tbl = ?2 AND pc_id = ?3",
        )?
        .execute(params![answer.job_id, table, pc])?;
    }
    Ok(())
}

fn stored_rows(tx: &Transaction<'_>, job_id: &str, table: &str, pc: &str) -> Result<Rows, DbError> {
    let mut stmt = tx.prepare_cached(
        "SELECT row_key, row FROM inventory_rows WHERE job_id = ?1 AND tbl = ?2 AND pc_id = ?3",
    )?;
    let rows = stmt
        .query_map(params![job_id, table, pc], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(key, row)| (key, serde_json::from_str(&row).unwrap_or_default()))
        .collect())
}

fn store_check(
    tx: &Transaction<'_>,
    answer: &Answer<'_>,
    hint: &CheckHint,
    status: &str,
    detail: &str,
) -> Result<bool, DbError> {
    let pc = &answer.result.pc_id;
    let mut alerted = false;
    let stored: Option<(String, String, String, String)> = tx
        .prepare_cached(
            "SELECT version, order_key, status, since FROM check_states WHERE check_name = ?1 AND pc_id = ?2",
        )?
        .query_row(params![hint.name, pc], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let order = stored.as_ref().map(|(v, f, _, _)| (v.clone(), f.clone()));
    if !newer(answer.version, &answer.order, order.as_ref()) {
        return Ok(false);
    }
    let previous = stored.as_ref().map(|(_, _, status, _)| status.as_str());
    let since = match &stored {
        Some((_, _, was, since)) if was == status => since.clone(),
        _ => {
            tx.prepare_cached(
                "INSERT INTO check_history (check_name, pc_id, from_status, to_status, detail, at, result_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                hint.name,
                pc,
                previous,
                status,
                detail,
                answer.finished_at,
                answer.result.result_id
            ])?;
            if hint.alerts_on(status) {
                tx.prepare_cached(
                    "INSERT INTO check_alerts (check_name, label, pc_id, from_status, to_status, detail, at, job_id, version, result_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    hint.name,
                    hint.label,
                    pc,
                    previous,
                    status,
                    detail,
                    answer.finished_at,
                    answer.job_id,
                    answer.version,
                    answer.result.result_id
                ])?;
                alerted = true;
            }
            answer.finished_at.clone()
        }
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO check_states (check_name, pc_id, job_id, version, status, detail, since, finished_at, order_key, result_id, label)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        hint.name,
        pc,
        answer.job_id,
        answer.version,
        status,
        detail,
        since,
        answer.finished_at,
        answer.order,
        answer.result.result_id,
        hint.label
    ])?;
    Ok(alerted)
}
