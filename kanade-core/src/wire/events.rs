//! Lifecycle, liveness and observability messages agents publish.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Published on `events.started.<exec_id>.<pc>` just before the child spawns.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct EventStarted {
    /// Same id the final [`ExecResult`](super::ExecResult) will carry.
    #[serde(default)]
    pub result_id: String,
    /// The command's request id.
    pub request_id: String,
    /// The execution the command belongs to.
    #[serde(default)]
    pub exec_id: Option<String>,
    /// The pc starting the command.
    pub pc_id: String,
    /// When the child is being spawned.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub started_at: DateTime<Utc>,
    /// The job (manifest) id, when the command came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_id: Option<String>,
    /// The job version being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Liveness report on `heartbeat.<pc>` (also the reply to `agents.<pc>.ping`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The reporting pc.
    pub pc_id: String,
    /// When the heartbeat was taken.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// Version of the running agent.
    pub agent_version: String,
    /// Host name as the OS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `windows`, `linux`, `macos`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    /// CPU architecture of the agent build (`x86_64`, `aarch64`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_arch: Option<String>,
    /// The agent process's own CPU use, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cpu_pct: Option<f32>,
    /// The agent process's resident memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_rss_bytes: Option<u64>,
    /// Whether this agent refuses unsigned commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcing: Option<bool>,
    /// Key ids of the command-signing keys this agent trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_keys: Option<Vec<String>>,
    /// Agent versions this host rolled back after they failed to start
    /// healthy (never installed here again); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_versions: Option<Vec<String>>,
}

/// One observability event on `obs.<pc>` (sign-in, power, agent milestones, …).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct ObsEvent {
    /// The pc the event happened on.
    pub pc_id: String,
    /// When it happened.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// What happened (`logon`, `power_off`, …).
    pub kind: String,
    /// Who observed it (`agent`, a job id, an OS log name, …).
    #[serde(default)]
    pub source: String,
    /// Record id in the source log, for de-duplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_record_id: Option<u64>,
    /// Free-form detail.
    #[serde(default)]
    pub payload: serde_json::Value,
}
