//! The [`Backend`]: catalogue, fan-out, stop layers and the projectors that
//! fill the SQLite store.
//!
//! The struct, its settings and clock live in a small leaf (`core`) that
//! the other modules build on, each adding its own `impl Backend` block:
//! `catalogue` (jobs and schedules in the key-value buckets), `fanout`
//! (targets and commands), `stop` (revoke, activate, pin, kill),
//! `projectors` (results, start events, heartbeats into SQLite) and
//! `reaper` (runs that never reported), `rollouts` (self-stopping
//! rollouts: their driver, halt actions and controls), `approvals` and `schedule_approvals` (the M-of-N workflow), `identities`
//! (who may publish results as which pc), `fleet_view` (the agents with
//! their groups, one pc whole). `error` holds [`BackendError`].

mod agent_releases;
mod agent_schedules;
mod alerts;
mod approvals;
mod catalogue;
mod core;
mod error;
mod fanout;
mod fleet_view;
mod health;
mod identities;
mod projectors;
mod reaper;
mod rollouts;
mod schedule_approvals;
mod stop;
mod versions;

pub use self::agent_releases::{ReleaseListing, VersionSpread};
pub use self::core::{Backend, BackendSettings, IdFn, NowFn};
pub use self::error::BackendError;
pub use self::fanout::FireOptions;
pub use self::fleet_view::{JobView, PcView};
pub use self::identities::AgentIdentities;
pub use self::projectors::RESULTS_CONSUMER;
pub use self::rollouts::{RolloutStatus, WaveStatus};
pub use self::stop::{execution_over, finished_status, KillOutcome};
pub use self::versions::{version_changed, AppliedJob};
