//! Operator pins: a job held at one version until the pin is cleared
//! (`kanade pin` / `kanade unpin`). Agents see the pinned version in
//! `script_current` and skip others with 124; applying a newer version
//! does not move a pin.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::core::{Db, DbError};

/// One pin.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The job.
    pub job_id: String,
    /// The version it is held at.
    pub version: String,
    /// When (RFC 3339).
    pub pinned_at: String,
}

impl Db {
    /// Pins `job_id` at `version` (replacing an earlier pin).
    pub fn set_pin(&self, pin: &Pin) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO job_pins (job_id, version, pinned_at) VALUES (?1, ?2, ?3)",
            params![pin.job_id, pin.version, pin.pinned_at],
        )?;
        Ok(())
    }

    /// Clears `job_id`'s pin; returns whether there was one.
    pub fn clear_pin(&self, job_id: &str) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .execute("DELETE FROM job_pins WHERE job_id = ?1", [job_id])?
            > 0)
    }

    /// `job_id`'s pin, if any.
    pub fn pin(&self, job_id: &str) -> Result<Option<Pin>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT job_id, version, pinned_at FROM job_pins WHERE job_id = ?1",
                [job_id],
                |r| {
                    Ok(Pin {
                        job_id: r.get(0)?,
                        version: r.get(1)?,
                        pinned_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every pin, by job.
    pub fn pins(&self) -> Result<Vec<Pin>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT job_id, version, pinned_at FROM job_pins ORDER BY job_id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Pin {
                    job_id: r.get(0)?,
                    version: r.get(1)?,
                    pinned_at: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
