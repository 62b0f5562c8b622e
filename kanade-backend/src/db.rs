//! The backend's SQLite store: executions, results, in-flight runs and
//! agents. Writes are idempotent by key, so a result published twice or a
//! projector restarted mid-batch never yields a duplicate or lost row.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

use kanade_core::wire::ExecResult;

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE executions (
            exec_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            version TEXT NOT NULL,
            request_id TEXT NOT NULL,
            target TEXT NOT NULL,
            targeted INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started INTEGER NOT NULL DEFAULT 0,
            succeeded INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            reap_after_secs INTEGER NOT NULL DEFAULT 3600
        );
        CREATE TABLE results (
            result_id TEXT PRIMARY KEY,
            exec_id TEXT,
            request_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            exit_code INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            stdout TEXT NOT NULL,
            stderr TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            manifest_id TEXT,
            reaped INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX results_by_exec ON results(exec_id);
        CREATE TABLE runs (
            result_id TEXT PRIMARY KEY,
            exec_id TEXT,
            request_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            started_at TEXT NOT NULL,
            deadline_at TEXT NOT NULL
        );
        CREATE TABLE agents (
            pc_id TEXT PRIMARY KEY,
            last_seen TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            hostname TEXT,
            os_family TEXT
        );",
        ),
        M::up(
            "CREATE TABLE schedule_fires (
            schedule_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            version TEXT NOT NULL,
            fired_at TEXT NOT NULL,
            exec_id TEXT,
            PRIMARY KEY (schedule_id, scope)
        );
        CREATE TABLE schedule_cursor (
            schedule_id TEXT PRIMARY KEY,
            checked_until TEXT NOT NULL
        );
        CREATE TABLE freeze (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            until TEXT,
            reason TEXT
        );",
        ),
        M::up(
            "CREATE TABLE waves (
            schedule_id TEXT NOT NULL,
            fire_key TEXT NOT NULL,
            wave INTEGER NOT NULL,
            grp TEXT NOT NULL,
            due_at TEXT NOT NULL,
            deadline_base TEXT NOT NULL,
            exec_id TEXT NOT NULL,
            fired INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (schedule_id, fire_key, wave)
        );",
        ),
    ])
}

/// A later rollout wave waiting for its delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWave {
    /// The schedule.
    pub schedule_id: String,
    /// Which fire (the first wave's execution id).
    pub fire_key: String,
    /// Wave number (1 = the second wave).
    pub wave: i64,
    /// The wave's group.
    pub group: String,
    /// When it goes out.
    pub due_at: DateTime<Utc>,
    /// The fire's due time (the deadline counts from it).
    pub deadline_base: DateTime<Utc>,
    /// The execution id it will use.
    pub exec_id: String,
}

/// A fleet-wide freeze of scheduled fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Freeze {
    /// When it ends (RFC 3339); `None` until cleared.
    pub until: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// One execution row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// Agents addressed (alive by heartbeat when it started).
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
}

/// One stored result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// One agent row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AgentRow {
    /// Pc id.
    pub pc_id: String,
    /// Last heartbeat.
    pub last_seen: String,
    /// Agent version.
    pub agent_version: String,
    /// Host name.
    pub hostname: Option<String>,
    /// OS family.
    pub os_family: Option<String>,
    /// Seen within the online window.
    pub online: bool,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
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
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // 32 MiB of page cache: result rows of big fleets stay in memory.
        conn.pragma_update(None, "cache_size", -32768)?;
        migrations().to_latest(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new execution.
    pub fn insert_execution(&self, row: &ExecutionRow) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO executions (exec_id, job_id, version, request_id, target, targeted, status, created_at, reap_after_secs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![row.exec_id, row.job_id, row.version, row.request_id, row.target, row.targeted, row.status, row.created_at, row.reap_after_secs],
        )?;
        Ok(())
    }

    /// Stores a result (idempotent by `result_id`; a real result replaces a
    /// reaped one) and updates its execution's counters in the same
    /// transaction (by the difference it makes, so storing costs the same
    /// for the 10,000th result of an execution as for the first). Returns
    /// whether anything changed.
    pub fn store_result(&self, result: &ExecResult, reaped: bool) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existing: Option<(bool, bool, i64)> = tx
            .query_row(
                "SELECT reaped, skipped, exit_code FROM results WHERE result_id = ?1",
                [&result.result_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let write = match existing {
            None => true,
            Some((was_reaped, _, _)) => was_reaped && !reaped,
        };
        if write {
            tx.execute(
                "INSERT OR REPLACE INTO results (result_id, exec_id, request_id, pc_id, exit_code, skipped, stdout, stderr,
                    started_at, finished_at, attempts, manifest_id, reaped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
            let run_closed =
                tx.execute("DELETE FROM runs WHERE result_id = ?1", [&result.result_id])? > 0;
            if let Some(exec_id) = &result.exec_id {
                let mut delta = Counters::of_result(result.skipped, i64::from(result.exit_code));
                if let Some((_, skipped, exit_code)) = existing {
                    delta = delta.minus(Counters::of_result(skipped, exit_code));
                }
                if run_closed {
                    delta.started -= 1;
                }
                adjust_counters(&tx, exec_id, delta)?;
            }
        }
        tx.commit()?;
        Ok(write)
    }

    /// Records a run that has started (ignored once its result is stored).
    pub fn insert_run(&self, run: &OverdueRun, deadline: DateTime<Utc>) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let already: bool = tx
            .query_row(
                "SELECT 1 FROM results WHERE result_id = ?1",
                [&run.result_id],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if !already {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO runs (result_id, exec_id, request_id, pc_id, started_at, deadline_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run.result_id, run.exec_id, run.request_id, run.pc_id, run.started_at, deadline.to_rfc3339()],
            )? > 0;
            if let (true, Some(exec_id)) = (inserted, &run.exec_id) {
                let delta = Counters {
                    started: 1,
                    ..Counters::default()
                };
                adjust_counters(&tx, exec_id, delta)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs past their deadline without a result.
    pub fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<OverdueRun>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
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

    /// Records a heartbeat.
    pub fn upsert_agent(&self, heartbeat: &kanade_core::wire::Heartbeat) -> Result<(), DbError> {
        self.upsert_agents(std::slice::from_ref(heartbeat))
    }

    /// Records a batch of heartbeats in one transaction.
    pub fn upsert_agents(
        &self,
        heartbeats: &[kanade_core::wire::Heartbeat],
    ) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for heartbeat in heartbeats {
            upsert_agent(&tx, heartbeat)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn upsert_agent(
    tx: &rusqlite::Transaction<'_>,
    heartbeat: &kanade_core::wire::Heartbeat,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT INTO agents (pc_id, last_seen, agent_version, hostname, os_family) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(pc_id) DO UPDATE SET last_seen = excluded.last_seen, agent_version = excluded.agent_version,
            hostname = excluded.hostname, os_family = excluded.os_family",
    )?
    .execute(params![
        heartbeat.pc_id,
        heartbeat.at.to_rfc3339(),
        heartbeat.agent_version,
        heartbeat.hostname,
        heartbeat.os_family
    ])?;
    Ok(())
}

impl Db {
    /// Every agent, online if seen since `online_since`.
    pub fn agents(&self, online_since: DateTime<Utc>) -> Result<Vec<AgentRow>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT pc_id, last_seen, agent_version, hostname, os_family FROM agents ORDER BY pc_id")?;
        let since = online_since.to_rfc3339();
        let rows = stmt
            .query_map([], |r| {
                let last_seen: String = r.get(1)?;
                Ok(AgentRow {
                    online: last_seen >= since,
                    pc_id: r.get(0)?,
                    last_seen,
                    agent_version: r.get(2)?,
                    hostname: r.get(3)?,
                    os_family: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
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

    fn executions_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<ExecutionRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT exec_id, job_id, version, request_id, target, targeted, status, created_at, started, succeeded, failed, skipped, reap_after_secs
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
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An execution's results, by pc.
    pub fn results(&self, exec_id: &str) -> Result<Vec<ResultRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT result_id, exec_id, request_id, pc_id, exit_code, skipped, stdout, stderr, started_at, finished_at, attempts, reaped
             FROM results WHERE exec_id = ?1 ORDER BY pc_id",
        )?;
        let rows = stmt
            .query_map([exec_id], |r| {
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

    /// The last fire of a schedule for `scope` (a pc id, or `*` for the target).
    /// Only fires whose execution was recorded count: a fire recorded but
    /// never published (a crash in between) is forgotten, so it happens again.
    pub fn last_fire(
        &self,
        schedule_id: &str,
        scope: &str,
    ) -> Result<Option<(DateTime<Utc>, String)>, DbError> {
        let row: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT f.fired_at, f.version FROM schedule_fires f JOIN executions e ON e.exec_id = f.exec_id
                 WHERE f.schedule_id = ?1 AND f.scope = ?2",
                params![schedule_id, scope],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(at, version)| {
            DateTime::parse_from_rfc3339(&at)
                .ok()
                .map(|t| (t.with_timezone(&Utc), version))
        }))
    }

    /// Records a fire (replacing the previous one for that scope).
    pub fn record_fire(
        &self,
        schedule_id: &str,
        scope: &str,
        version: &str,
        at: DateTime<Utc>,
        exec_id: &str,
    ) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO schedule_fires (schedule_id, scope, version, fired_at, exec_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![schedule_id, scope, version, at.to_rfc3339(), exec_id],
        )?;
        Ok(())
    }

    /// Pcs for which this schedule's latest fire (since `window_start`) has
    /// no result yet — still in flight.
    pub fn in_flight_pcs(
        &self,
        schedule_id: &str,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<String>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT f.scope FROM schedule_fires f
             WHERE f.schedule_id = ?1 AND f.fired_at > ?2 AND f.scope != '*' AND f.scope NOT LIKE 'at:%'
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.exec_id = f.exec_id AND r.pc_id = f.scope)",
        )?;
        let pcs = stmt
            .query_map(params![schedule_id, window_start.to_rfc3339()], |r| {
                r.get(0)
            })?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(pcs)
    }

    /// Plans the later waves of a fire (idempotent per schedule, fire, wave).
    pub fn plan_wave(&self, wave: &PlannedWave) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT OR IGNORE INTO waves (schedule_id, fire_key, wave, grp, due_at, deadline_base, exec_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                wave.schedule_id,
                wave.fire_key,
                wave.wave,
                wave.group,
                wave.due_at.to_rfc3339(),
                wave.deadline_base.to_rfc3339(),
                wave.exec_id
            ],
        )?;
        Ok(())
    }

    /// Planned waves due by `now` and not fired yet.
    pub fn due_waves(&self, now: DateTime<Utc>) -> Result<Vec<PlannedWave>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT schedule_id, fire_key, wave, grp, due_at, deadline_base, exec_id FROM waves
             WHERE fired = 0 AND due_at <= ?1 ORDER BY due_at, wave",
        )?;
        let parse = |t: String| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let waves = stmt
            .query_map([now.to_rfc3339()], |r| {
                Ok(PlannedWave {
                    schedule_id: r.get(0)?,
                    fire_key: r.get(1)?,
                    wave: r.get(2)?,
                    group: r.get(3)?,
                    due_at: parse(r.get(4)?),
                    deadline_base: parse(r.get(5)?),
                    exec_id: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(waves)
    }

    /// Marks a planned wave fired.
    pub fn wave_fired(&self, wave: &PlannedWave) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE waves SET fired = 1 WHERE schedule_id = ?1 AND fire_key = ?2 AND wave = ?3",
            params![wave.schedule_id, wave.fire_key, wave.wave],
        )?;
        Ok(())
    }

    /// Up to when a calendar schedule has been checked.
    pub fn cursor(&self, schedule_id: &str) -> Result<Option<DateTime<Utc>>, DbError> {
        let at: Option<String> = self
            .lock()
            .query_row(
                "SELECT checked_until FROM schedule_cursor WHERE schedule_id = ?1",
                [schedule_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(at
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Moves a calendar schedule's cursor.
    pub fn set_cursor(&self, schedule_id: &str, at: DateTime<Utc>) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO schedule_cursor (schedule_id, checked_until) VALUES (?1, ?2)",
            params![schedule_id, at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// The current freeze, if one is set.
    pub fn freeze(&self) -> Result<Option<Freeze>, DbError> {
        Ok(self
            .lock()
            .query_row("SELECT until, reason FROM freeze WHERE id = 1", [], |r| {
                Ok(Freeze {
                    until: r.get(0)?,
                    reason: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Sets the freeze.
    pub fn set_freeze(
        &self,
        until: Option<DateTime<Utc>>,
        reason: Option<&str>,
    ) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO freeze (id, until, reason) VALUES (1, ?1, ?2)",
            params![until.map(|t| t.to_rfc3339()), reason],
        )?;
        Ok(())
    }

    /// Clears the freeze.
    pub fn clear_freeze(&self) -> Result<(), DbError> {
        self.lock().execute("DELETE FROM freeze", [])?;
        Ok(())
    }

    /// Whether a freeze is in force at `now`.
    pub fn frozen(&self, now: DateTime<Utc>) -> Result<bool, DbError> {
        Ok(match self.freeze()? {
            None => false,
            Some(Freeze { until: None, .. }) => true,
            Some(Freeze {
                until: Some(until), ..
            }) => DateTime::parse_from_rfc3339(&until).is_ok_and(|u| now < u.with_timezone(&Utc)),
        })
    }

    /// Marks an execution cancelled (after a kill).
    pub fn set_status(&self, exec_id: &str, status: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE executions SET status = ?2 WHERE exec_id = ?1",
            params![exec_id, status],
        )?;
        Ok(())
    }
}

/// Recomputes an execution's counters from its stored results.
/// What one result or run adds to an execution's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    succeeded: i64,
    failed: i64,
    skipped: i64,
    started: i64,
}

impl Counters {
    /// A stored result: skipped, or started and then succeeded or failed.
    fn of_result(skipped: bool, exit_code: i64) -> Self {
        Self {
            succeeded: i64::from(!skipped && exit_code == 0),
            failed: i64::from(!skipped && exit_code != 0),
            skipped: i64::from(skipped),
            started: i64::from(!skipped),
        }
    }

    fn minus(self, other: Self) -> Self {
        Self {
            succeeded: self.succeeded - other.succeeded,
            failed: self.failed - other.failed,
            skipped: self.skipped - other.skipped,
            started: self.started - other.started,
        }
    }
}

/// Applies `delta` to an execution's counters and moves its status on.
fn adjust_counters(
    tx: &rusqlite::Transaction<'_>,
    exec_id: &str,
    delta: Counters,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "UPDATE executions SET
            succeeded = succeeded + ?2, failed = failed + ?3, skipped = skipped + ?4,
            started = started + ?5
         WHERE exec_id = ?1",
    )?
    .execute(params![
        exec_id,
        delta.succeeded,
        delta.failed,
        delta.skipped,
        delta.started
    ])?;
    tx.prepare_cached(
        "UPDATE executions SET status = CASE
            WHEN status = 'cancelled' THEN status
            WHEN succeeded + failed + skipped >= targeted THEN 'completed'
            WHEN started > 0 OR succeeded + failed + skipped > 0 THEN 'running'
            ELSE status END
         WHERE exec_id = ?1",
    )?
    .execute([exec_id])?;
    Ok(())
}
