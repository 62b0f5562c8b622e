//! Rollout state (DESIGN §11): one `rollouts` row per execution that has
//! a self-stopping rollout (its policy, the command it dispatches, its
//! state, the current wave and the error budget's counts since it started
//! or was last resumed), and one `rollout_targets` row per target (its
//! wave, its phase — `pending`, `dispatched`, `started`, `done`,
//! `unreached` — and its outcome). A result moves its target and the
//! budget in the same transaction that stores it ([`rollout_result`]), and
//! a breach halts the rollout there, so nothing is dispatched after the
//! result that breached the budget.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::core::{Db, DbError};
use crate::rollout::decide::{breach, Outcome};
use crate::rollout::spec::RolloutSpec;

/// A rollout dispatching.
pub const ROLLOUT_RUNNING: &str = "running";
/// Paused by an operator: nothing dispatched until resumed.
pub const ROLLOUT_PAUSED: &str = "paused";
/// Halted by its error budget.
pub const ROLLOUT_HALTED: &str = "halted";
/// Aborted by an operator.
pub const ROLLOUT_ABORTED: &str = "aborted";
/// Every wave finished.
pub const ROLLOUT_COMPLETED: &str = "completed";

/// One rollout.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RolloutRow {
    /// Its execution.
    pub exec_id: String,
    /// The policy as written.
    pub spec: RolloutSpec,
    /// The command (JSON) it dispatches to each target.
    #[serde(skip)]
    pub command: String,
    /// `running`, `paused`, `halted`, `aborted` or `completed`.
    pub state: String,
    /// Why it halted (`2 errors of 6 results > 1`), or who aborted it.
    pub reason: Option<String>,
    /// The current wave (0-based).
    pub wave: i64,
    /// When the current wave finished (its bake started).
    pub wave_finished_at: Option<String>,
    /// Failed results counted by the budget since start or resume.
    pub budget_errors: i64,
    /// Non-skipped results counted by the budget since start or resume.
    pub budget_results: i64,
    /// Whether the halt's `on_halt` actions ran.
    pub halt_actions_done: bool,
    /// When the budget halted it (the time of the result that breached
    /// it, by the backend's clock).
    pub halted_at: Option<String>,
}

/// One target of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RolloutTargetRow {
    /// The pc.
    pub pc_id: String,
    /// Its wave (0-based).
    pub wave: i64,
    /// `pending`, `dispatched`, `started`, `done` or `unreached`.
    pub phase: String,
    /// `succeeded`, `failed` or `skipped` once done.
    pub outcome: Option<String>,
    /// When its command went out.
    pub dispatched_at: Option<String>,
}

/// A rollout's targets, counted per wave.
#[derive(
    schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize,
)]
pub struct WaveCounts {
    /// The wave (0-based).
    pub wave: i64,
    /// Targets in it.
    pub targets: i64,
    /// Not dispatched yet.
    pub pending: i64,
    /// Dispatched or started, no result yet.
    pub in_flight: i64,
    /// Results with exit 0.
    pub succeeded: i64,
    /// Results counted against the budget.
    pub failed: i64,
    /// Skipped runs (gates).
    pub skipped: i64,
    /// Offline at their turn, or never started within `start_within`.
    pub unreached: i64,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    let spec: String = r.get(1)?;
    Ok(RolloutRow {
        exec_id: r.get(0)?,
        spec: serde_json::from_str(&spec).unwrap_or_default(),
        command: r.get(2)?,
        state: r.get(3)?,
        reason: r.get(4)?,
        wave: r.get(5)?,
        wave_finished_at: r.get(6)?,
        budget_errors: r.get(7)?,
        budget_results: r.get(8)?,
        halt_actions_done: r.get(9)?,
        halted_at: r.get(10)?,
    })
}

const COLUMNS: &str = "exec_id, spec, command, state, reason, wave, wave_finished_at, budget_errors, budget_results, halt_actions_done, halted_at";

impl Db {
    /// Records a rollout and its targets with their waves (`pending`).
    pub fn insert_rollout(
        &self,
        exec_id: &str,
        spec: &RolloutSpec,
        command: &str,
        targets: &[(String, usize)],
    ) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO rollouts (exec_id, spec, command, state) VALUES (?1, ?2, ?3, 'running')",
            params![
                exec_id,
                serde_json::to_string(spec).unwrap_or_default(),
                command
            ],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO rollout_targets (exec_id, pc_id, wave, phase) VALUES (?1, ?2, ?3, 'pending')",
            )?;
            for (pc, wave) in targets {
                insert.execute(params![exec_id, pc, *wave as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// One rollout.
    pub fn rollout(&self, exec_id: &str) -> Result<Option<RolloutRow>, DbError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE exec_id = ?1"),
                [exec_id],
                read_row,
            )
            .optional()?)
    }

    /// Rollouts the driver has work on: running ones, and halted ones
    /// whose `on_halt` actions have not run.
    pub fn active_rollouts(&self) -> Result<Vec<RolloutRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state = 'running' OR (state = 'halted' AND halt_actions_done = 0) ORDER BY exec_id"
        ))?;
        let rows = stmt.query_map([], read_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every target of a rollout, by pc.
    pub fn rollout_targets(&self, exec_id: &str) -> Result<Vec<RolloutTargetRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT pc_id, wave, phase, outcome, dispatched_at FROM rollout_targets WHERE exec_id = ?1 ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map([exec_id], |r| {
                Ok(RolloutTargetRow {
                    pc_id: r.get(0)?,
                    wave: r.get(1)?,
                    phase: r.get(2)?,
                    outcome: r.get(3)?,
                    dispatched_at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Per-wave counts of a rollout's targets.
    pub fn rollout_waves(&self, exec_id: &str) -> Result<Vec<WaveCounts>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT wave, COUNT(*),
                SUM(phase = 'pending'), SUM(phase IN ('dispatched', 'started')),
                SUM(phase = 'done' AND outcome = 'succeeded'), SUM(phase = 'done' AND outcome = 'failed'),
                SUM(phase = 'done' AND outcome = 'skipped'), SUM(phase = 'unreached')
             FROM rollout_targets WHERE exec_id = ?1 GROUP BY wave ORDER BY wave",
        )?;
        let rows = stmt
            .query_map([exec_id], |r| {
                Ok(WaveCounts {
                    wave: r.get(0)?,
                    targets: r.get(1)?,
                    pending: r.get(2)?,
                    in_flight: r.get(3)?,
                    succeeded: r.get(4)?,
                    failed: r.get(5)?,
                    skipped: r.get(6)?,
                    unreached: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Up to `limit` pending targets of `wave` whose agent was seen since
    /// `online_since`, by pc id.
    pub fn rollout_pending_online(
        &self,
        exec_id: &str,
        wave: i64,
        online_since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<String>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT t.pc_id FROM rollout_targets t JOIN agents a ON a.pc_id = t.pc_id
             WHERE t.exec_id = ?1 AND t.wave = ?2 AND t.phase = 'pending' AND a.last_seen >= ?3
             ORDER BY t.pc_id LIMIT ?4",
        )?;
        let rows = stmt
            .query_map(
                params![exec_id, wave, online_since.to_rfc3339(), limit as i64],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Marks `pcs` dispatched at `at` — only while the rollout is
    /// `running` and only targets still `pending` — and returns the ones
    /// marked (the driver publishes to exactly those, so a halt or pause
    /// between its decision and this call dispatches nothing).
    pub fn mark_dispatched(
        &self,
        exec_id: &str,
        pcs: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM rollouts WHERE exec_id = ?1",
                [exec_id],
                |r| r.get(0),
            )
            .optional()?;
        let mut marked = Vec::new();
        if state.as_deref() == Some(ROLLOUT_RUNNING) {
            let mut update = tx.prepare_cached(
                "UPDATE rollout_targets SET phase = 'dispatched', dispatched_at = ?3
                 WHERE exec_id = ?1 AND pc_id = ?2 AND phase = 'pending'",
            )?;
            for pc in pcs {
                if update.execute(params![exec_id, pc, at.to_rfc3339()])? > 0 {
                    marked.push(pc.clone());
                }
            }
        }
        tx.commit()?;
        Ok(marked)
    }

    /// Puts `pcs` back to `pending` after their publish failed.
    pub fn undo_dispatch(&self, exec_id: &str, pcs: &[String]) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for pc in pcs {
            tx.execute(
                "UPDATE rollout_targets SET phase = 'pending', dispatched_at = NULL
                 WHERE exec_id = ?1 AND pc_id = ?2 AND phase = 'dispatched'",
                params![exec_id, pc],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Targets dispatched before `before` that never started give their
    /// window slot back (`unreached`); returns how many.
    pub fn expire_unstarted(&self, exec_id: &str, before: DateTime<Utc>) -> Result<usize, DbError> {
        Ok(self.lock().execute(
            "UPDATE rollout_targets SET phase = 'unreached'
             WHERE exec_id = ?1 AND phase = 'dispatched' AND dispatched_at < ?2",
            params![exec_id, before.to_rfc3339()],
        )?)
    }

    /// The pending targets of `wave` (all offline at their turn) become
    /// `unreached`; returns how many.
    pub fn give_up_offline(&self, exec_id: &str, wave: i64) -> Result<usize, DbError> {
        Ok(self.lock().execute(
            "UPDATE rollout_targets SET phase = 'unreached' WHERE exec_id = ?1 AND wave = ?2 AND phase = 'pending'",
            params![exec_id, wave],
        )?)
    }

    /// Records that the current wave finished at `at` (its bake starts).
    pub fn rollout_wave_finished(&self, exec_id: &str, at: DateTime<Utc>) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE rollouts SET wave_finished_at = ?2 WHERE exec_id = ?1",
            params![exec_id, at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Moves a running rollout to its next wave.
    pub fn rollout_next_wave(&self, exec_id: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE rollouts SET wave = wave + 1, wave_finished_at = NULL WHERE exec_id = ?1 AND state = 'running'",
            [exec_id],
        )?;
        Ok(())
    }

    /// Completes a running rollout, and its execution.
    pub fn complete_rollout(&self, exec_id: &str) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if tx.execute(
            "UPDATE rollouts SET state = 'completed' WHERE exec_id = ?1 AND state = 'running'",
            [exec_id],
        )? > 0
        {
            tx.execute(
                "UPDATE executions SET status = 'completed' WHERE exec_id = ?1",
                [exec_id],
            )?;
        }
        tx.commit()?;
        self.executions_changed();
        Ok(())
    }

    /// Records that a halt's `on_halt` actions ran.
    pub fn rollout_halt_actions_done(&self, exec_id: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE rollouts SET halt_actions_done = 1 WHERE exec_id = ?1",
            [exec_id],
        )?;
        Ok(())
    }

    /// Moves a rollout from one of `from` to `to` with `reason`, and its
    /// execution's status to `execution_status`. Resuming (to `running`)
    /// restarts the budget's counts, puts `unreached` targets back to
    /// `pending`, and, given one, swaps in a new command (a new job
    /// version). Returns the state it was in, or `None` if it was in none
    /// of `from` (nothing changed).
    pub fn transition_rollout(
        &self,
        exec_id: &str,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        execution_status: &str,
        new_command: Option<(&str, &str)>,
    ) -> Result<Option<String>, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM rollouts WHERE exec_id = ?1",
                [exec_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(state) = state.filter(|s| from.contains(&s.as_str())) else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE rollouts SET state = ?2, reason = ?3 WHERE exec_id = ?1",
            params![exec_id, to, reason],
        )?;
        if to == ROLLOUT_RUNNING {
            tx.execute(
                "UPDATE rollouts SET budget_errors = 0, budget_results = 0, halt_actions_done = 0 WHERE exec_id = ?1",
                [exec_id],
            )?;
            tx.execute(
                "UPDATE rollout_targets SET phase = 'pending', dispatched_at = NULL WHERE exec_id = ?1 AND phase = 'unreached'",
                [exec_id],
            )?;
            // Back to the earliest wave that has targets left (an earlier
            // wave's unreached targets are pending again), and a new
            // budget epoch: results counted before it stay out of the new
            // budget.
            tx.execute(
                "UPDATE rollouts SET epoch = epoch + 1, wave_finished_at = NULL,
                    wave = COALESCE((SELECT MIN(wave) FROM rollout_targets WHERE exec_id = ?1 AND phase = 'pending'), wave)
                 WHERE exec_id = ?1",
                [exec_id],
            )?;
        }
        if let Some((command, version)) = new_command {
            tx.execute(
                "UPDATE rollouts SET command = ?2 WHERE exec_id = ?1",
                params![exec_id, command],
            )?;
            tx.execute(
                "UPDATE executions SET version = ?2 WHERE exec_id = ?1",
                params![exec_id, version],
            )?;
        }
        tx.execute(
            "UPDATE executions SET status = ?2 WHERE exec_id = ?1",
            params![exec_id, execution_status],
        )?;
        tx.commit()?;
        self.executions_changed();
        Ok(Some(state))
    }
}

/// A result of `exec_id` from `pc_id`, inside the transaction storing it:
/// moves the target to `done` with `outcome` (replacing `previous`, the
/// outcome of a reaped result a real one replaces), moves the budget's
/// counts, and halts the rollout (state, reason, execution status) if they
/// now breach its budget (`now`: the halt's time). Returns whether a rollout changed (the driver is
/// woken); executions without a rollout are untouched.
pub(super) fn rollout_result(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    pc_id: &str,
    previous: Option<Outcome>,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let rollout: Option<(String, String, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT spec, state, budget_errors, budget_results, epoch FROM rollouts WHERE exec_id = ?1",
        )?
        .query_row([exec_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((spec, state, mut errors, mut results, epoch)) = rollout else {
        return Ok(false);
    };
    // The previous outcome (a reaped result a real one replaces) is in the
    // budget only if it was counted in this epoch (since the last resume).
    let counted_in: Option<i64> = tx
        .prepare_cached("SELECT epoch FROM rollout_targets WHERE exec_id = ?1 AND pc_id = ?2")?
        .query_row(params![exec_id, pc_id], |r| r.get(0))
        .optional()?
        .flatten();
    let previous = previous.filter(|_| counted_in == Some(epoch));
    tx.prepare_cached(
        "UPDATE rollout_targets SET phase = 'done', outcome = ?3, epoch = ?4 WHERE exec_id = ?1 AND pc_id = ?2",
    )?
    .execute(params![exec_id, pc_id, outcome.as_str(), epoch])?;
    let counts = |o: Outcome| match o {
        Outcome::Failed => (1, 1),
        Outcome::Succeeded => (0, 1),
        Outcome::Skipped => (0, 0),
    };
    if let Some(previous) = previous {
        let (e, r) = counts(previous);
        errors -= e;
        results -= r;
    }
    let (e, r) = counts(outcome);
    errors = (errors + e).max(0);
    results = (results + r).max(0);
    tx.prepare_cached(
        "UPDATE rollouts SET budget_errors = ?2, budget_results = ?3 WHERE exec_id = ?1",
    )?
    .execute(params![exec_id, errors, results])?;
    if state == ROLLOUT_RUNNING || state == ROLLOUT_PAUSED {
        let policy = serde_json::from_str::<RolloutSpec>(&spec)
            .ok()
            .and_then(|s| s.validate().ok().flatten());
        if let Some(reason) =
            policy.and_then(|p| breach(&p, errors.max(0) as u64, results.max(0) as u64))
        {
            tx.prepare_cached(
                "UPDATE rollouts SET state = 'halted', reason = ?2, halt_actions_done = 0, halted_at = ?3 WHERE exec_id = ?1",
            )?
            .execute(params![exec_id, reason, now.to_rfc3339()])?;
            tx.prepare_cached("UPDATE executions SET status = 'halted' WHERE exec_id = ?1")?
                .execute([exec_id])?;
        }
    }
    Ok(true)
}

/// A run of `exec_id` on `pc_id` started: its target is in flight until
/// its result — from `dispatched`, and also from `unreached` or `pending`
/// (a start that came late, after its slot was given back: it runs, so it
/// is never dispatched again).
pub(super) fn rollout_started(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    pc_id: &str,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "UPDATE rollout_targets SET phase = 'started' WHERE exec_id = ?1 AND pc_id = ?2 AND (phase = 'dispatched' OR phase = 'unreached' OR phase = 'pending')",
    )?
    .execute(params![exec_id, pc_id])?;
    Ok(())
}
