//! What the backend hands agents for `runs_on: agent` schedules (KV
//! `agent_schedules`, one [`SignedDocument`](crate::policy::signed::SignedDocument)
//! per key): each schedule with the command it fires, keyed by schedule
//! id, and the fleet-wide freeze under [`FREEZE_KEY`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Command;
use crate::policy::when::When;

/// How the execution id of an agent-side fire starts:
/// `sched-<schedule>-<occurrence, unix seconds>` (one execution per
/// schedule and occurrence, across the agents that fire it).
pub const AGENT_FIRE_PREFIX: &str = "sched-";

/// The `agent_schedules` key of the fleet-wide freeze (a schedule id is a
/// subject token and never contains a dot).
pub const FREEZE_KEY: &str = "fleet.freeze";

/// Which agents a schedule is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTarget {
    /// Every agent.
    #[serde(default)]
    pub all: bool,
    /// Agents in these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// These pcs.
    #[serde(default)]
    pub pcs: Vec<String>,
}

impl AgentTarget {
    /// Whether the agent `pc` in `groups` is targeted.
    pub fn includes(&self, pc: &str, groups: &[&str]) -> bool {
        self.all
            || self.pcs.iter().any(|p| p == pc)
            || self.groups.iter().any(|g| groups.contains(&g.as_str()))
    }
}

/// A `runs_on: agent` schedule as an agent runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSchedule {
    /// The schedule's id.
    pub schedule_id: String,
    /// `calendar`, `per_pc`, `per_target` (counted per agent here) or
    /// `on: [startup]`.
    pub when: When,
    /// Who runs it.
    pub target: AgentTarget,
    /// `local` (the agent's zone) or UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `enabled`.
    pub enabled: bool,
    /// `active.from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from: Option<String>,
    /// `active.until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_until: Option<String>,
    /// `constraints.window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `constraints.skip_dates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_dates: Vec<String>,
    /// A fire later than this after its time is skipped with 125.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_secs: Option<u64>,
    /// The command each fire runs: the job's current version, script and
    /// gates; its `request_id`, `exec_id`, `issued_at` and `deadline_at`
    /// are set per fire.
    pub command: Command,
}

/// The fleet-wide freeze as agents see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFreeze {
    /// Frozen now (until `until`, if set).
    pub frozen: bool,
    /// When it lifts by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl FleetFreeze {
    /// Whether scheduled fires are held at `now`.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.frozen && self.until.is_none_or(|until| now < until)
    }
}
