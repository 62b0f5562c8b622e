//! Layered agent configuration stored in the `agent_config` bucket.
//!
//! Every scope (`global`, `groups.<g>`, `pcs.<pc>`) stores an
//! [`AgentConfigScope`]: `Some` sets a field, `None` inherits it.
//! [`crate::policy::config::resolve`] flattens the layers into an
//! [`EffectiveConfig`].

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One layer of agent configuration; unset fields fall through.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(default)]
pub struct AgentConfigScope {
    /// Commands run at once on the pc; unset means the CPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_local_concurrent: Option<NonZeroU32>,
    /// Agent version the fleet should run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Random delay before fetching a new agent version (humantime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_version_jitter: Option<String>,
    /// Heartbeat period (humantime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
    /// Host performance snapshot period (humantime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_perf_interval: Option<String>,
    /// Publish per-process performance snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_perf_enabled: Option<bool>,
    /// Stop per-process snapshots after this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_perf_expires_at: Option<DateTime<Utc>>,
    /// How many processes a per-process snapshot lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_perf_top_n: Option<u32>,
    /// Product name shown to end users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_display_name: Option<String>,
}

/// The configuration an agent runs with after layering.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// Commands run at once; `None` means the CPU count of the pc.
    #[serde(default)]
    pub max_local_concurrent: Option<NonZeroU32>,
    /// Agent version the fleet should run; `None` keeps the running one.
    #[serde(default)]
    pub target_version: Option<String>,
    /// Random delay before fetching a new agent version (humantime).
    pub target_version_jitter: String,
    /// Heartbeat period (humantime).
    pub heartbeat_interval: String,
    /// Host performance snapshot period (humantime).
    pub host_perf_interval: String,
    /// Publish per-process performance snapshots.
    pub process_perf_enabled: bool,
    /// Stop per-process snapshots after this instant.
    #[serde(default)]
    pub process_perf_expires_at: Option<DateTime<Utc>>,
    /// How many processes a per-process snapshot lists.
    pub process_perf_top_n: u32,
    /// Product name shown to end users; `None` uses the built-in name.
    #[serde(default)]
    pub client_display_name: Option<String>,
}

impl Default for EffectiveConfig {
    /// The built-in floor used where no scope sets a field.
    fn default() -> Self {
        Self {
            max_local_concurrent: None,
            target_version: None,
            target_version_jitter: "10m".to_owned(),
            heartbeat_interval: "30s".to_owned(),
            host_perf_interval: "60s".to_owned(),
            process_perf_enabled: false,
            process_perf_expires_at: None,
            process_perf_top_n: 20,
            client_display_name: None,
        }
    }
}

impl EffectiveConfig {
    /// The heartbeat period; a malformed value falls back to 30 s.
    pub fn heartbeat_period(&self) -> std::time::Duration {
        humantime::parse_duration(&self.heartbeat_interval)
            .unwrap_or(std::time::Duration::from_secs(30))
    }
}
