//! Results and the runs in flight: storing a result (idempotent by
//! `result_id`, counters moved in the same transaction), recording started
//! runs, and finding the ones the reaper should close.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use kanade_core::wire::ExecResult;

use super::core::{Db, DbError};
use super::executions::{adjust_counters, Counters};
use crate::rollout::decide::Outcome;

/// One stored result.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ResultRow {
    /// Unique per command × pc.
    pub result_id: String,
    /// Execution.
    pub exec_id: Option<String>,
    /// Request.
    pub request_id: String,
    /// Pc.
    pub pc_id: String,
    /// Exit code.
    pub exit_code: i64,
    /// Skipped.
    pub skipped: bool,
    /// Full stdout (overflow dereferenced).
    pub stdout: String,
    /// Full stderr.
    pub stderr: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub finished_at: String,
    /// Attempts.
    pub attempts: i64,
    /// Closed by the reaper (the agent never reported).
    pub reaped: bool,
}

/// A run the reaper should close.
#[derive(Debug, Clone)]
pub struct OverdueRun {
    /// Result id it would have had.
    pub result_id: String,
    /// Execution.
    pub exec_id: Option<String>,
    /// Request.
    pub request_id: String,
    /// Pc.
    pub pc_id: String,
    /// When it started.
    pub started_at: String,
}

impl Db {
    /// Stores a result (idempotent by `result_id`; a real result replaces a
    /// reaped one) and updates its execution's counters in the same
    /// transaction (by the difference it makes, so storing costs the same
    /// for the 10,000th result of an execution as for the first). Returns
    /// whether anything changed.
    pub fn store_result(&self, result: &ExecResult, reaped: bool) -> Result<bool, DbError> {
        self.store_result_at(result, reaped, Utc::now())
    }

    /// [`Db::store_result`] at `now` by the backend's clock (the time a
    /// rollout it halts records).
    pub fn store_result_at(
        &self,
        result: &ExecResult,
        reaped: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        Ok(self.store_results_at(std::slice::from_ref(result), reaped, now)?[0])
    }

    /// Stores a burst of results in one transaction (one sync to disk),
    /// each as [`Db::store_result`] does; returns, per result, whether it
    /// changed anything. The caller acknowledges each only after this
    /// returns: stored before acked holds for the whole burst.
    pub fn store_results_at(
        &self,
        results: &[ExecResult],
        reaped: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut written = Vec::with_capacity(results.len());
        let mut rollout_changed = false;
        let mut alerted = false;
        for result in results {
            let stored = store_in(&tx, result, reaped, now)?;
            written.push(stored.written);
            rollout_changed |= stored.moved_rollout;
            alerted |= stored.queued_alert;
        }
        tx.commit()?;
        drop(conn);
        if rollout_changed {
            self.rollout_changed().notify_one();
        }
        if alerted {
            self.alerts_queued().notify_one();
        }
        if written.iter().any(|w| *w) {
            self.executions_changed();
        }
        Ok(written)
    }

    /// Records a run that has started at `started_at` (ignored once its
    /// result is stored). It is overdue after its execution's
    /// `reap_after_secs`, or `default_reap_secs` for a run of no (known)
    /// execution.
    pub fn insert_run(
        &self,
        run: &OverdueRun,
        started_at: DateTime<Utc>,
        default_reap_secs: i64,
    ) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let agent_fired = match &run.exec_id {
            Some(exec_id)
                if is_agent_fire_of(exec_id, &run.request_id, &run.result_id, &run.pc_id) =>
            {
                ensure_agent_fire_execution(&tx, exec_id, "", &run.started_at)?
            }
            _ => false,
        };
        let reap_after: i64 = match &run.exec_id {
            Some(exec_id) => tx
                .prepare_cached("SELECT reap_after_secs FROM executions WHERE exec_id = ?1")?
                .query_row([exec_id], |r| r.get(0))
                .optional()?,
            None => None,
        }
        .unwrap_or(default_reap_secs);
        let deadline = started_at + chrono::Duration::seconds(reap_after);
        let already: bool = tx
            .prepare_cached("SELECT 1 FROM results WHERE result_id = ?1")?
            .query_row([&run.result_id], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if !already {
            let inserted = tx.prepare_cached(
                "INSERT OR IGNORE INTO runs (result_id, exec_id, request_id, pc_id, started_at, deadline_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
                params![run.result_id, run.exec_id, run.request_id, run.pc_id, run.started_at, deadline.to_rfc3339()],
            )? > 0;
            if let (true, Some(exec_id)) = (inserted, &run.exec_id) {
                if agent_fired {
                    add_agent_fire_target(&tx, exec_id)?;
                }
                super::rollouts::rollout_started(&tx, exec_id, &run.pc_id)?;
                let delta = Counters {
                    started: 1,
                    ..Counters::default()
                };
                adjust_counters(&tx, exec_id, delta)?;
            }
        }
        tx.commit()?;
        self.executions_changed();
        Ok(())
    }

    /// Runs past their deadline without a result.
    pub fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<OverdueRun>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT result_id, exec_id, request_id, pc_id, started_at FROM runs WHERE deadline_at < ?1",
        )?;
        let rows = stmt
            .query_map([now.to_rfc3339()], |r| {
                Ok(OverdueRun {
                    result_id: r.get(0)?,
                    exec_id: r.get(1)?,
                    request_id: r.get(2)?,
                    pc_id: r.get(3)?,
                    started_at: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An execution's results, by pc.
    pub fn results(&self, exec_id: &str) -> Result<Vec<ResultRow>, DbError> {
        self.results_matching(exec_id, None, true)
    }

    /// An execution's results, by pc: only `pc`'s when given, and with
    /// empty `stdout` / `stderr` unless `with_output` (a view of a large
    /// fleet's rows need not carry every pc's output).
    pub fn results_matching(
        &self,
        exec_id: &str,
        pc: Option<&str>,
        with_output: bool,
    ) -> Result<Vec<ResultRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT result_id, exec_id, request_id, pc_id, exit_code, skipped,
                    CASE WHEN ?3 THEN stdout ELSE '' END, CASE WHEN ?3 THEN stderr ELSE '' END,
                    started_at, finished_at, attempts, reaped
             FROM results WHERE exec_id = ?1 AND (?2 IS NULL OR pc_id = ?2) ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map(params![exec_id, pc, with_output], |r| {
                Ok(ResultRow {
                    result_id: r.get(0)?,
                    exec_id: r.get(1)?,
                    request_id: r.get(2)?,
                    pc_id: r.get(3)?,
                    exit_code: r.get(4)?,
                    skipped: r.get(5)?,
                    stdout: r.get(6)?,
                    stderr: r.get(7)?,
                    started_at: r.get(8)?,
                    finished_at: r.get(9)?,
                    attempts: r.get(10)?,
                    reaped: r.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// What storing one result did.
struct Stored {
    /// It changed something.
    written: bool,
    /// It moved a rollout (its driver is woken).
    moved_rollout: bool,
    /// Its check projection queued an alert (the alert publisher is woken).
    queued_alert: bool,
}

/// One result inside `tx`.
/// An agent-side schedule's fire (`kanade_core::wire::AGENT_FIRE_PREFIX`)
/// has no execution until its agents report: the row is made at the first
/// start event or result (job from the result, when known; schedule from
/// the execution id; `targeted` 0), and each pc counts as a target at its
/// first sighting. Returns whether `exec_id` is such a fire.
fn ensure_agent_fire_execution(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    job_id: &str,
    at: &str,
) -> Result<bool, DbError> {
    let Some(rest) = exec_id.strip_prefix(kanade_core::wire::AGENT_FIRE_PREFIX) else {
        return Ok(false);
    };
    let schedule_id = rest.rsplit_once('-').map_or(rest, |(id, _)| id);
    tx.prepare_cached(
        "INSERT OR IGNORE INTO executions (exec_id, job_id, version, request_id, target, targeted, status, created_at, reap_after_secs, schedule_id)
         VALUES (?1, ?2, '', ?1, '{\"all\":false,\"groups\":[],\"pcs\":[]}', 0, 'running', ?3, 3600, ?4)",
    )?
    .execute(params![exec_id, job_id, at, schedule_id])?;
    if !job_id.is_empty() {
        tx.prepare_cached("UPDATE executions SET job_id = ?2 WHERE exec_id = ?1 AND job_id = ''")?
            .execute(params![exec_id, job_id])?;
    }
    Ok(true)
}

/// Whether the ids are those an agent gives its own fire of `exec_id`.
fn is_agent_fire_of(exec_id: &str, request_id: &str, result_id: &str, pc_id: &str) -> bool {
    exec_id.starts_with(kanade_core::wire::AGENT_FIRE_PREFIX)
        && request_id.starts_with(exec_id)
        && result_id
            .strip_suffix(pc_id)
            .and_then(|r| r.strip_suffix('-'))
            == Some(request_id)
}

/// One more target for an agent-side fire's execution.
fn add_agent_fire_target(tx: &rusqlite::Transaction<'_>, exec_id: &str) -> Result<(), DbError> {
    tx.prepare_cached("UPDATE executions SET targeted = targeted + 1 WHERE exec_id = ?1")?
        .execute([exec_id])?;
    Ok(())
}

/// A first result of an agent-side fire: its execution exists, and the pc
/// is a target unless its start event counted it already.
fn agent_fired_answer(tx: &rusqlite::Transaction<'_>, result: &ExecResult) -> Result<(), DbError> {
    let Some(exec_id) = result.exec_id.as_deref() else {
        return Ok(());
    };
    // An agent-side fire's ids are the agent's own: `<exec>…` for the
    // request, `<request>-<pc>` for the result. Anything else claiming the
    // prefix (another pc's result id, a made-up execution) counts nowhere.
    if !is_agent_fire_of(
        exec_id,
        &result.request_id,
        &result.result_id,
        &result.pc_id,
    ) {
        return Ok(());
    }
    let at = result.started_at.to_rfc3339();
    let job = result.manifest_id.as_deref().unwrap_or_default();
    if !ensure_agent_fire_execution(tx, exec_id, job, &at)? {
        return Ok(());
    }
    let counted_at_start = tx
        .prepare_cached("SELECT 1 FROM runs WHERE result_id = ?1")?
        .query_row([&result.result_id], |_| Ok(true))
        .optional()?
        .unwrap_or(false);
    if !counted_at_start {
        add_agent_fire_target(tx, exec_id)?;
    }
    Ok(())
}

fn store_in(
    tx: &rusqlite::Transaction<'_>,
    result: &ExecResult,
    reaped: bool,
    now: DateTime<Utc>,
) -> Result<Stored, DbError> {
    let existing: Option<(bool, bool, i64)> = tx
        .prepare_cached("SELECT reaped, skipped, exit_code FROM results WHERE result_id = ?1")?
        .query_row([&result.result_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let write = match existing {
        None => true,
        Some((was_reaped, _, _)) => was_reaped && !reaped,
    };
    let mut rollout_changed = false;
    let mut queued_alert = false;
    if write && existing.is_none() {
        agent_fired_answer(tx, result)?;
    }
    if write {
        tx.prepare_cached(
                "INSERT OR REPLACE INTO results (result_id, exec_id, request_id, pc_id, exit_code, skipped, stdout, stderr,
                    started_at, finished_at, attempts, manifest_id, reaped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")?.execute(
                params![
                    result.result_id,
                    result.exec_id,
                    result.request_id,
                    result.pc_id,
                    result.exit_code,
                    result.skipped,
                    result.stdout,
                    result.stderr,
                    result.started_at.to_rfc3339(),
                    result.finished_at.to_rfc3339(),
                    result.attempts,
                    result.manifest_id,
                    reaped,
                ],
            )?;
        let run_closed = tx
            .prepare_cached("DELETE FROM runs WHERE result_id = ?1")?
            .execute([&result.result_id])?
            > 0;
        if let Some(exec_id) = &result.exec_id {
            if existing.is_none() {
                super::targets::count_answer(tx, exec_id, &result.pc_id)?;
            }
            let previous = existing.map(|(_, skipped, code)| Outcome::of(skipped, code));
            let outcome = Outcome::of(result.skipped, i64::from(result.exit_code));
            rollout_changed = super::rollouts::rollout_result(
                tx,
                exec_id,
                &result.pc_id,
                previous,
                outcome,
                now,
            )?;
            let mut delta = Counters::of_result(result.skipped, i64::from(result.exit_code));
            if let Some((_, skipped, exit_code)) = existing {
                delta = delta.minus(Counters::of_result(skipped, exit_code));
            }
            if run_closed {
                delta.started -= 1;
            }
            adjust_counters(tx, exec_id, delta)?;
        }
        queued_alert = super::inventory::project_in(tx, result, now)?;
    }
    Ok(Stored {
        written: write,
        moved_rollout: rollout_changed,
        queued_alert,
    })
}
