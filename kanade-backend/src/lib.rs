//! # kanade-backend
//!
//! The backend operators drive: a catalogue of jobs and schedules (YAML in
//! the reference format, validated with field and line), fan-out of
//! commands with version pinning, stop layers (revoke, pin, kill), and
//! projectors that keep results, in-flight runs and agents in SQLite. The
//! `kanade-backend` binary serves it over an HTTP API; the `kanade` CLI
//! drives that API.
//!
//! ```
//! use kanade_backend::manifest::parse_job;
//!
//! let job = parse_job("id: echo-test\nversion: 1.0.0\nexecute:\n  shell: powershell\n  script: \"echo 'kanade'\"\n  timeout: 30s\n", &Default::default()).unwrap();
//! assert_eq!(job.id, "echo-test");
//!
//! let err = parse_job("id: x\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: soon\n", &Default::default()).unwrap_err();
//! assert_eq!(err.errors[0].line, Some(6));
//! ```

pub mod approval;
pub mod audit;
pub mod auth;
mod backend;
#[cfg(feature = "cli")]
pub mod cli_args;
pub mod console;
pub mod db;
pub mod http;
pub mod inventory;
pub mod manifest;
pub mod metrics;
pub mod nats_auth;
pub mod rollout;
pub mod schedule;
pub mod scheduler;
mod script_text;
/// `when:` forms and their lowering (shared with the agent).
pub use kanade_core::policy::when;
pub mod wording;
mod yaml_lines;

pub use backend::{
    execution_over, finished_status, version_changed, AgentIdentities, AppliedJob, Backend,
    BackendError, BackendSettings, FireOptions, IdFn, JobView, KillOutcome, NowFn, PcView,
    ReleaseListing, RolloutStatus, VersionSpread, WaveStatus, RESULTS_CONSUMER,
};
pub use scheduler::Scheduler;
