//! The scheduler's records: fires per scope, calendar cursors, planned
//! rollout waves, and the fleet-wide freeze.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::core::{Db, DbError};

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
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Freeze {
    /// When it ends (RFC 3339); `None` until cleared.
    pub until: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

impl Db {
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
            .prepare_cached(
                "SELECT f.fired_at, f.version FROM schedule_fires f JOIN executions e ON e.exec_id = f.exec_id
                 WHERE f.schedule_id = ?1 AND f.scope = ?2",
            )?
            .query_row(params![schedule_id, scope], |r| Ok((r.get(0)?, r.get(1)?)))
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
        let mut stmt = conn.prepare_cached(
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
        let mut stmt = conn.prepare_cached(
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
            .prepare_cached("SELECT until, reason FROM freeze WHERE id = 1")?
            .query_row([], |r| {
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
}
