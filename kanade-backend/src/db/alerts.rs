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

fn read_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckAlertRecord> {
    Ok(CheckAlertRecord {
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
    })
}

const COLUMNS: &str =
    "id, check_name, label, pc_id, from_status, to_status, detail, at, job_id, version, result_id";

impl Db {
    /// Queued alerts not yet on the bus, oldest first, at most `limit`.
    pub fn unpublished_alerts(&self, limit: usize) -> Result<Vec<CheckAlertRecord>, DbError> {
        self.alerts_where("published = 0", limit)
    }

    /// Queued alerts not yet delivered to the webhook, oldest first, at
    /// most `limit`.
    pub fn undelivered_alerts(&self, limit: usize) -> Result<Vec<CheckAlertRecord>, DbError> {
        self.alerts_where("delivered = 0", limit)
    }

    fn alerts_where(&self, filter: &str, limit: usize) -> Result<Vec<CheckAlertRecord>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM check_alerts WHERE {filter} ORDER BY id LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], read_alert)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Marks an alert as on the bus; `delivered` too when there is no
    /// webhook to deliver it to (so a webhook configured later is not
    /// flooded with old alerts).
    pub fn mark_alert_published(&self, id: i64, delivered: bool) -> Result<(), DbError> {
        self.lock()
            .prepare_cached(
                "UPDATE check_alerts SET published = 1, delivered = MAX(delivered, ?2) WHERE id = ?1",
            )?
            .execute(params![id, delivered])?;
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
