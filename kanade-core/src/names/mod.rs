//! Names shared by every component: KV buckets, object stores, streams,
//! keys and subjects.
//!
//! Bucket names are the reference system's dotted names with dots flattened
//! to underscores (NATS bucket names allow only `[A-Za-z0-9_-]`).

mod keys;
mod streams;
pub mod subjects;
mod token;

pub use keys::{
    agent_config_group_key, agent_config_pc_key, parse_agent_config_group_key,
    parse_agent_config_pc_key,
};
pub use streams::{StreamSpec, ALL_STREAMS, RESERVED_STREAM_BYTES};
pub use token::{InvalidToken, SubjectToken, TokenKind};

/// KV: last known state per agent.
pub const BUCKET_AGENTS_STATE: &str = "agents_state";
/// KV: layered agent configuration (`global`, `groups.<g>`, `pcs.<pc>`, `target_version`).
pub const BUCKET_AGENT_CONFIG: &str = "agent_config";
/// KV: group memberships per pc.
pub const BUCKET_AGENT_GROUPS: &str = "agent_groups";
/// KV: job catalog, keyed by manifest id.
pub const BUCKET_JOBS: &str = "jobs";
/// KV: operator YAML source of each job, keyed like [`BUCKET_JOBS`].
pub const BUCKET_JOBS_YAML: &str = "jobs_yaml";
/// KV: schedules, keyed by schedule id.
pub const BUCKET_SCHEDULES: &str = "schedules";
/// KV: operator YAML source of each schedule, keyed like [`BUCKET_SCHEDULES`].
pub const BUCKET_SCHEDULES_YAML: &str = "schedules_yaml";
/// KV: job id → current version (the version pin).
pub const BUCKET_SCRIPT_CURRENT: &str = "script_current";
/// KV: job id → [`SCRIPT_STATUS_ACTIVE`] or [`SCRIPT_STATUS_REVOKED`].
pub const BUCKET_SCRIPT_STATUS: &str = "script_status";

/// KV: execution id → [`KillRecord`](crate::wire::KillRecord), the
/// durable kill (a kanade extension: agents that were offline at the kill
/// learn of it here). Entries expire after [`KILL_RECORD_TTL`].
pub const BUCKET_EXEC_KILLS: &str = "exec_kills";

/// KV: schedule id → the signed `runs_on: agent` schedule agents fire on
/// their own ([`AgentSchedule`](crate::wire::AgentSchedule)), and
/// [`FREEZE_KEY`](crate::wire::FREEZE_KEY) → the fleet-wide freeze (a
/// kanade extension: the reference stores such schedules without running
/// them).
pub const BUCKET_AGENT_SCHEDULES: &str = "agent_schedules";

/// How long a kill is remembered: as long as an agent's ledger remembers
/// request ids (8 days), past EXEC's 7-day replay window, so no command of
/// a killed execution can arrive after its kill is forgotten.
pub const KILL_RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 3600);

/// Buckets kanade adds to the reference's ([`ALL_BUCKETS`]).
pub const EXTENSION_BUCKETS: [&str; 2] = [BUCKET_EXEC_KILLS, BUCKET_AGENT_SCHEDULES];

/// The entry lifetime a bucket is provisioned with (`None`: forever).
pub fn bucket_ttl(bucket: &str) -> Option<std::time::Duration> {
    (bucket == BUCKET_EXEC_KILLS).then_some(KILL_RECORD_TTL)
}

/// The `exec_kills` bucket as every party opens it: the latest record per
/// execution, expiring after [`KILL_RECORD_TTL`].
pub fn exec_kills_config() -> crate::transport::KvConfig {
    let mut config = crate::transport::KvConfig::new(BUCKET_EXEC_KILLS);
    config.ttl = bucket_ttl(BUCKET_EXEC_KILLS);
    config
}

/// Every KV bucket name the reference uses (see also [`EXTENSION_BUCKETS`]).
pub const ALL_BUCKETS: [&str; 9] = [
    BUCKET_AGENTS_STATE,
    BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS,
    BUCKET_JOBS,
    BUCKET_JOBS_YAML,
    BUCKET_SCHEDULES,
    BUCKET_SCHEDULES_YAML,
    BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS,
];

/// Object store: agent binaries, one object per version.
pub const OBJECT_AGENT_RELEASES: &str = "agent_releases";
/// Object store: application packages agents install.
pub const OBJECT_APP_PACKAGES: &str = "app_packages";
/// Object store: stdout / stderr too large to inline in a result.
pub const OBJECT_RESULT_OUTPUT: &str = "result_output";
/// Object store: script bodies referenced by `script_object`.
pub const OBJECT_SCRIPTS: &str = "scripts";

/// Every object store name.
pub const ALL_OBJECT_STORES: [&str; 4] = [
    OBJECT_AGENT_RELEASES,
    OBJECT_APP_PACKAGES,
    OBJECT_RESULT_OUTPUT,
    OBJECT_SCRIPTS,
];

/// Stream of commands (`commands.>`), one message kept per subject.
pub const STREAM_EXEC: &str = "EXEC";
/// Stream of results (`results.>`).
pub const STREAM_RESULTS: &str = "RESULTS";
/// Stream of script lifecycle events (`events.>`).
pub const STREAM_EVENTS: &str = "EVENTS";
/// Stream of audit entries (`audit.>`).
pub const STREAM_AUDIT: &str = "AUDIT";
/// Stream of inventory reports (`inventory.>`).
pub const STREAM_INVENTORY: &str = "INVENTORY";
/// Stream of observability events (`obs.>`).
pub const STREAM_OBS_EVENTS: &str = "OBS_EVENTS";

/// Largest stdout / stderr inlined in a result: 256 KiB, a quarter of the
/// NATS default max payload. Larger output goes to [`OBJECT_RESULT_OUTPUT`].
pub const STDOUT_INLINE_THRESHOLD: usize = 256 * 1024;

/// `script_status` value of a job that may run.
pub const SCRIPT_STATUS_ACTIVE: &str = "ACTIVE";
/// `script_status` value of a job that must not run (exit 126).
pub const SCRIPT_STATUS_REVOKED: &str = "REVOKED";

/// `agent_config` key of the fleet-wide scope.
pub const KEY_AGENT_CONFIG_GLOBAL: &str = "global";
/// `agent_config` key carrying the broadcast target agent version.
pub const KEY_AGENT_TARGET_VERSION: &str = "target_version";
/// `agent_config` key prefix of group scopes (`groups.<g>`).
pub const PREFIX_AGENT_CONFIG_GROUPS: &str = "groups.";
/// `agent_config` key prefix of pc scopes (`pcs.<pc>`).
pub const PREFIX_AGENT_CONFIG_PCS: &str = "pcs.";
