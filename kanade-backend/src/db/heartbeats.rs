//! Agents, as their heartbeats leave them: upserted in batches, listed
//! with whether each is online.

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::core::{Db, DbError};

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

impl Db {
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
