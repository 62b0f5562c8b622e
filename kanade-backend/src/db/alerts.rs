//! The check alerts queued by the projection (`db::inventory`), until the
//! alert publisher has put each on the bus and, with a webhook configured,
//! delivered it there.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::core::{Db, DbError};

/// A pc entered an alerting state of a check: what `alerts.<check>.<pc>`
/// carries and the webhook receives (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAlertRecord {
    /// Queue position (unique, increasing).
    pub id: i64,
    /// The check (`check.name`).
    pub check: String,
    /// Its label, when the job gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The pc.
    pub pc_id: String,
    /// The state it left (`None`: its first report).
    pub from: Option<String>,
    /// The state it entered.
    pub to: String,
    /// The check's detail line.
    pub detail: String,
    /// When the run that reported it finished (RFC 3339).
    pub at: String,
    /// The job and version that ran the check.
    pub job_id: String,
    /// The job version.
    pub version: String,
    /// The result it came from.
    pub result_id: String,
}

impl Db {
    /// Queued alerts not yet published (or, with `webhook`, not yet
    /// delivered there), oldest first, at most `limit`; with each, whether
    /// it was published already.
    pub fn pending_alerts(
        &self,
        webhook: bool,
        limit: usize,
    ) -> Result<Vec<(CheckAlertRecord, bool)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, check_name, label, pc_id, from_status, to_status, detail, at, job_id, version, result_id, published
             FROM check_alerts WHERE published = 0 OR (?1 AND delivered = 0) ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![webhook, limit as i64], |r| {
                Ok((
                    CheckAlertRecord {
                        id: r.get(0)?,
                        check: r.get(1)?,
                        label: r.get(2)?,
                        pc_id: r.get(3)?,
                        from: r.get(4)?,
                        to: r.get(5)?,
                        detail: r.get(6)?,
                        at: r.get(7)?,
                        job_id: r.get(8)?,
                        version: r.get(9)?,
                        result_id: r.get(10)?,
                    },
                    r.get(11)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Marks an alert as on the bus.
    pub fn mark_alert_published(&self, id: i64) -> Result<(), DbError> {
        self.lock()
            .prepare_cached("UPDATE check_alerts SET published = 1 WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Marks an alert as delivered to the webhook.
    pub fn mark_alert_delivered(&self, id: i64) -> Result<(), DbError> {
        self.lock()
            .prepare_cached("UPDATE check_alerts SET delivered = 1 WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }
}
