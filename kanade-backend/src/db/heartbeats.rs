//! Agents, as their heartbeats leave them: upserted in batches, listed
//! with whether each is online. `last_seen` is when the **backend**
//! received the heartbeat (an agent's clock may be off); the agent's own
//! time is kept as its clock offset.

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::core::{Db, DbError};

/// One agent row.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AgentRow {
    /// Pc id.
    pub pc_id: String,
    /// When the backend last received a heartbeat (its clock, RFC 3339).
    pub last_seen: String,
    /// Agent version.
    pub agent_version: String,
    /// Host name.
    pub hostname: Option<String>,
    /// OS family.
    pub os_family: Option<String>,
    /// Seen within the online window.
    pub online: bool,
    /// How far the agent's clock ran ahead of the backend's at its last
    /// heartbeat, in milliseconds (negative: behind); `None` for rows
    /// recorded before offsets were kept.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// Whether that offset is beyond
    /// [`SKEW_WARNING`](kanade_core::policy::clock::SKEW_WARNING).
    #[serde(default)]
    pub clock_skewed: bool,
    /// The latest hardware inventory the agent sent (`inventory.<pc>.hw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<kanade_core::wire::HwInventory>,
    /// Agent versions this host rolled back and will not install again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined_versions: Vec<String>,
    /// The groups the agent announced (its `agent_groups` key); filled by
    /// [`Backend::fleet`](crate::Backend::fleet), empty from the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A heartbeat and when the backend received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// The heartbeat as the agent sent it.
    pub heartbeat: kanade_core::wire::Heartbeat,
    /// The backend's clock when it arrived.
    pub received_at: DateTime<Utc>,
}

impl Sighting {
    /// The agent's clock offset, in milliseconds.
    pub fn clock_offset_ms(&self) -> i64 {
        kanade_core::policy::clock::offset(self.heartbeat.at, self.received_at).num_milliseconds()
    }
}

impl Db {
    /// Records a heartbeat received at `received_at` (backend clock).
    pub fn upsert_agent(
        &self,
        heartbeat: &kanade_core::wire::Heartbeat,
        received_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.upsert_agents(&[Sighting {
            heartbeat: heartbeat.clone(),
            received_at,
        }])
    }

    /// Records a batch of heartbeats in one transaction.
    pub fn upsert_agents(&self, sightings: &[Sighting]) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            // Prepared (taken from the cache) once for the whole batch.
            let mut update = tx.prepare_cached(UPDATE_AGENT)?;
            for sighting in sightings {
                upsert_agent(&tx, &mut update, sighting)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the batch of heartbeats `sightings` makes, in one
    /// transaction, on the database thread ([`Db::with_write_behind`]):
    /// returns at once, and every later call that reads or writes sees the
    /// batch stored (a health probe's `ping` does not wait). Without
    /// that thread, records it now. `sightings` runs where the batch is
    /// stored (it may parse the heartbeats there); a batch that cannot be
    /// stored is logged, as heartbeats are not acknowledged and the next
    /// one from each agent replaces it.
    pub fn upsert_agents_behind(&self, sightings: impl FnOnce() -> Vec<Sighting> + Send + 'static) {
        let db = self.clone();
        self.queue_write(Box::new(move || {
            let batch = sightings();
            if batch.is_empty() {
                return;
            }
            if let Err(e) = db.upsert_agents(&batch) {
                tracing::warn!("heartbeats not stored: {e}");
            }
        }));
    }

    /// Records a pc's hardware inventory, unless a newer one is stored.
    pub fn record_hardware(
        &self,
        inventory: &kanade_core::wire::HwInventory,
    ) -> Result<(), DbError> {
        let at = inventory
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let text = serde_json::to_string(inventory).unwrap_or_default();
        self.lock().execute(
            "INSERT INTO agent_hardware (pc_id, collected_at, inventory) VALUES (?1, ?2, ?3)
             ON CONFLICT(pc_id) DO UPDATE SET collected_at = excluded.collected_at, inventory = excluded.inventory
             WHERE excluded.collected_at >= agent_hardware.collected_at",
            params![inventory.pc_id, at, text],
        )?;
        Ok(())
    }

    /// Every agent, online if seen since `online_since`.
    pub fn agents(&self, online_since: DateTime<Utc>) -> Result<Vec<AgentRow>, DbError> {
        self.agents_where(online_since, None)
    }

    /// The pc ids of the agents seen since `online_since` (the online
    /// ones of [`Db::agents`]), sorted: what a fan-out targets, read
    /// without building every agent's row.
    pub fn online_pcs(&self, online_since: DateTime<Utc>) -> Result<Vec<String>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT pc_id FROM agents WHERE last_seen >= ?1 ORDER BY pc_id")?;
        let pcs = stmt
            .query_map([online_since.to_rfc3339()], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(pcs)
    }

    /// One agent, if it ever sent a heartbeat.
    pub fn agent(
        &self,
        pc: &str,
        online_since: DateTime<Utc>,
    ) -> Result<Option<AgentRow>, DbError> {
        Ok(self.agents_where(online_since, Some(pc))?.pop())
    }

    fn agents_where(
        &self,
        online_since: DateTime<Utc>,
        pc: Option<&str>,
    ) -> Result<Vec<AgentRow>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT a.pc_id, a.last_seen, a.agent_version, a.hostname, a.os_family, a.clock_offset_ms, h.inventory, a.quarantined_versions
                FROM agents a LEFT JOIN agent_hardware h ON h.pc_id = a.pc_id
                WHERE ?1 IS NULL OR a.pc_id = ?1 ORDER BY a.pc_id")?;
        let since = online_since.to_rfc3339();
        let rows = stmt
            .query_map([pc], |r| {
                let last_seen: String = r.get(1)?;
                let clock_offset_ms: Option<i64> = r.get(5)?;
                Ok(AgentRow {
                    clock_offset_ms,
                    clock_skewed: clock_offset_ms.is_some_and(|ms| {
                        kanade_core::policy::clock::is_large(chrono::Duration::milliseconds(ms))
                    }),
                    online: last_seen >= since,
                    pc_id: r.get(0)?,
                    last_seen,
                    agent_version: r.get(2)?,
                    hostname: r.get(3)?,
                    os_family: r.get(4)?,
                    hardware: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|text| serde_json::from_str(&text).ok()),
                    quarantined_versions: r
                        .get::<_, Option<String>>(7)?
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or_default(),
                    groups: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// A known agent's heartbeat (every one but its first) is one keyed
/// update; `INSERT … ON CONFLICT DO UPDATE` would try the insert first.
const UPDATE_AGENT: &str =
    "UPDATE agents SET last_seen = ?2, agent_version = ?3, hostname = ?4, os_family = ?5,
        clock_offset_ms = ?6, quarantined_versions = ?7
     WHERE pc_id = ?1";

/// Records one sighting: `update` is [`UPDATE_AGENT`] prepared on `tx`;
/// an agent it does not find is inserted.
fn upsert_agent(
    tx: &rusqlite::Transaction<'_>,
    update: &mut rusqlite::CachedStatement<'_>,
    sighting: &Sighting,
) -> Result<(), DbError> {
    let heartbeat = &sighting.heartbeat;
    let values = params![
        heartbeat.pc_id,
        sighting.received_at.to_rfc3339(),
        heartbeat.agent_version,
        heartbeat.hostname,
        heartbeat.os_family,
        sighting.clock_offset_ms(),
        heartbeat
            .quarantined_versions
            .as_ref()
            .and_then(|list| serde_json::to_string(list).ok())
    ];
    if update.execute(values)? == 0 {
        tx.prepare_cached(
            "INSERT INTO agents (pc_id, last_seen, agent_version, hostname, os_family, clock_offset_ms, quarantined_versions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(values)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::db::DbDurability;

    /// The online pcs are exactly the online rows of `agents`, in order,
    /// for a window before, between and after the sightings.
    #[test]
    fn online_pcs_are_the_online_agents() {
        let db = Db::open_with(Path::new("unused.sqlite"), DbDurability::Simulated).expect("db");
        let at = |minute: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-06-01T10:{minute:02}:00Z"))
                .map(|t| t.with_timezone(&Utc))
                .expect("time")
        };
        let heartbeat: kanade_core::wire::Heartbeat = serde_json::from_str(
            r#"{"pc_id":"x","at":"2026-06-01T10:00:00Z","agent_version":"1"}"#,
        )
        .expect("heartbeat");
        let sightings: Vec<Sighting> = [("pc-b", 5), ("pc-a", 20), ("pc-c", 40), ("pc-d", 20)]
            .into_iter()
            .map(|(pc, minute)| Sighting {
                heartbeat: kanade_core::wire::Heartbeat {
                    pc_id: pc.into(),
                    ..heartbeat.clone()
                },
                received_at: at(minute),
            })
            .collect();
        db.upsert_agents(&sightings).expect("upsert");
        for since in [0, 5, 6, 20, 21, 40, 59] {
            let expected: Vec<String> = db
                .agents(at(since))
                .expect("agents")
                .into_iter()
                .filter(|a| a.online)
                .map(|a| a.pc_id)
                .collect();
            assert_eq!(
                db.online_pcs(at(since)).expect("online"),
                expected,
                "since minute {since}"
            );
        }
        assert_eq!(
            db.online_pcs(at(20)).expect("online"),
            ["pc-a", "pc-c", "pc-d"]
        );
    }

    /// What a run of heartbeat batches and reads does to a store.
    #[derive(Debug, Clone)]
    enum Step {
        /// A batch of (pc number, minute) sightings.
        Batch(Vec<(u8, u32)>),
        /// Which pcs are online since this minute.
        Online(u32),
        /// Every agent row, as seen at this minute.
        Agents(u32),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => prop::collection::vec((0u8..12, 0u32..60), 0..6).prop_map(Step::Batch),
            1 => (0u32..60).prop_map(Step::Online),
            1 => (0u32..60).prop_map(Step::Agents),
        ]
    }

    /// Runs `steps` on `db`, queuing each batch behind
    /// ([`Db::upsert_agents_behind`]); each read's answer, as text.
    fn run(db: &Db, steps: &[Step]) -> Vec<String> {
        let at = |minute: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-06-01T10:{minute:02}:00Z"))
                .map(|t| t.with_timezone(&Utc))
                .expect("time")
        };
        let mut answers = Vec::new();
        for step in steps {
            match step {
                Step::Batch(batch) => {
                    let batch: Vec<Sighting> = batch
                        .iter()
                        .map(|(pc, minute)| Sighting {
                            heartbeat: kanade_core::wire::Heartbeat {
                                pc_id: format!("pc-{pc:02}"),
                                at: at(*minute),
                                agent_version: format!("1.{minute}"),
                                ..serde_json::from_str(
                                    r#"{"pc_id":"x","at":"2026-06-01T10:00:00Z","agent_version":"1"}"#,
                                )
                                .expect("heartbeat")
                            },
                            received_at: at(*minute),
                        })
                        .collect();
                    db.upsert_agents_behind(move || {
                        // Slow enough that reads come while it is queued.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        batch
                    });
                }
                Step::Online(since) => answers.push(format!("{:?}", db.online_pcs(at(*since)))),
                Step::Agents(since) => answers.push(format!("{:?}", db.agents(at(*since)))),
            }
        }
        answers
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// With a database thread, every read sees exactly what it sees
        /// when each batch is stored in place: the batches queued before
        /// it, in their order, and none after.
        #[test]
        fn reads_see_the_batches_queued_before_them_as_if_stored_in_place(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let open = || Db::open_with(Path::new("unused.sqlite"), DbDurability::Simulated).expect("db");
            let in_place = open();
            let behind = open().with_write_behind().expect("thread");
            proptest::prop_assert!(!in_place.writes_behind());
            proptest::prop_assert!(behind.writes_behind());
            proptest::prop_assert_eq!(run(&behind, &steps), run(&in_place, &steps));
        }
    }
}
