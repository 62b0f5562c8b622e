//! The fleet as an operator looks at it: every agent with the groups it
//! announced, one pc whole (its row, recent results, checks and inventory
//! facts) for the console's pc page, and one job whole (its manifest as
//! applied, whether it is revoked, its pin).

use std::collections::BTreeMap;

use kanade_core::names::{
    BUCKET_AGENT_GROUPS, BUCKET_JOBS_YAML, BUCKET_SCRIPT_STATUS, SCRIPT_STATUS_REVOKED,
};
use kanade_core::wire::AgentGroups;
use serde::{Deserialize, Serialize};

use super::core::Backend;
use super::error::BackendError;
use crate::db::{AgentRow, CheckState, PcFacts, PcResult, Pin};
use crate::manifest::Job;

/// How many recent results a pc's page shows.
pub const PC_RECENT_RESULTS: usize = 50;

/// One pc whole: `GET /api/agents/{pc}`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcView {
    /// Its row in the agents list (groups filled).
    pub agent: AgentRow,
    /// Its newest results, newest first (at most [`PC_RECENT_RESULTS`]).
    pub results: Vec<PcResult>,
    /// Its current state in every check.
    pub checks: Vec<CheckState>,
    /// Its current facts from every inventory job.
    pub facts: Vec<PcFacts>,
}

/// One job whole: `GET /api/jobs/{id}`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The current version's manifest.
    pub job: Job,
    /// That manifest's YAML as applied (`jobs_yaml`), when kept.
    pub yaml: Option<String>,
    /// Revoked (agents skip it with 126) rather than active.
    pub revoked: bool,
    /// The operator pin, if any.
    pub pinned: Option<Pin>,
}

impl Backend {
    /// One job whole.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] for an unknown job; a database or
    /// transport error.
    pub async fn job_view(&self, id: &str) -> Result<JobView, BackendError> {
        let job = self.job(id).await?;
        let yaml = self
            .bucket(BUCKET_JOBS_YAML)
            .await?
            .get(id)
            .await?
            .map(|entry| String::from_utf8_lossy(&entry.value).into_owned());
        let revoked = self
            .bucket(BUCKET_SCRIPT_STATUS)
            .await?
            .get(id)
            .await?
            .is_some_and(|entry| entry.value.as_ref() == SCRIPT_STATUS_REVOKED.as_bytes());
        let pinned = self.pin_of(id).await?;
        Ok(JobView {
            job,
            yaml,
            revoked,
            pinned,
        })
    }

    /// Every agent that ever sent a heartbeat, by pc, with the groups it
    /// announced in the `agent_groups` bucket (a key that does not parse
    /// reads as no groups; with the broker out of reach the agents come
    /// without groups rather than not at all).
    ///
    /// # Errors
    /// A database error.
    pub async fn fleet(&self) -> Result<Vec<AgentRow>, BackendError> {
        let db = self.db.clone();
        let since = self.online_since();
        let mut agents = self.run_db(move || db.agents(since)).await?;
        let groups = self.announced_groups().await.unwrap_or_else(|e| {
            tracing::warn!("agents listed without their groups: {e}");
            BTreeMap::new()
        });
        for agent in &mut agents {
            if let Some(g) = groups.get(&agent.pc_id) {
                agent.groups.clone_from(g);
            }
        }
        Ok(agents)
    }

    /// One pc whole.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] for a pc that never sent a heartbeat
    /// (the same answer whatever else exists); a database or transport
    /// error.
    pub async fn pc_view(&self, pc: &str) -> Result<PcView, BackendError> {
        let db = self.db.clone();
        let since = self.online_since();
        let lookup = pc.to_owned();
        let mut agent = self
            .run_db(move || db.agent(&lookup, since))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("agent {pc}")))?;
        if let Ok(bucket) = self.bucket(BUCKET_AGENT_GROUPS).await {
            if let Ok(Some(entry)) = bucket.get(pc).await {
                agent.groups = announced(&entry.value).unwrap_or_default();
            }
        }
        let db = self.db.clone();
        let pc = pc.to_owned();
        let (results, checks, facts) = self
            .run_db(move || {
                Ok((
                    db.pc_results(&pc, PC_RECENT_RESULTS)?,
                    db.pc_check_states(&pc)?,
                    db.pc_facts(&pc)?,
                ))
            })
            .await?;
        Ok(PcView {
            agent,
            results,
            checks,
            facts,
        })
    }

    /// pc → the groups its `agent_groups` key names.
    async fn announced_groups(&self) -> Result<BTreeMap<String, Vec<String>>, BackendError> {
        let bucket = self.bucket(BUCKET_AGENT_GROUPS).await?;
        let mut keys = bucket.keys().await?.into_iter();
        let mut groups = BTreeMap::new();
        // Many reads in flight at once: a broker answers them over one
        // connection, so a fleet of thousands costs round trips / 64.
        let mut reads = tokio::task::JoinSet::new();
        let mut failed = 0usize;
        loop {
            while reads.len() < GROUP_READS_IN_FLIGHT {
                let Some(pc) = keys.next() else { break };
                let bucket = bucket.clone();
                reads.spawn(async move {
                    let entry = bucket.get(&pc).await;
                    (pc, entry)
                });
            }
            let Some(done) = reads.join_next().await else {
                break;
            };
            match done {
                Ok((pc, Ok(Some(entry)))) => {
                    if let Some(list) = announced(&entry.value) {
                        groups.insert(pc, list);
                    }
                }
                Ok((_, Ok(None))) => {}
                Ok((_, Err(_))) | Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            tracing::warn!(failed, "agents' groups not read");
        }
        Ok(groups)
    }
}

/// The groups an `agent_groups` value names (`None` when it does not
/// parse).
fn announced(value: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice::<AgentGroups>(value)
        .ok()
        .map(|a| a.groups().to_vec())
}

/// How many `agent_groups` reads [`Backend::fleet`] keeps in flight.
const GROUP_READS_IN_FLIGHT: usize = 64;
