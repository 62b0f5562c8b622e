//! The backend's SQLite store: executions, results, in-flight runs and
//! agents. Writes are idempotent by key, so a result published twice or a
//! projector restarted mid-batch never yields a duplicate or lost row.
//!
//! [`Db`] and [`DbError`] live in a small leaf (`core`); each table family
//! adds its own `impl Db` block beside its row types: `executions`,
//! `results` (and the runs in flight), `heartbeats` (agents), `schedules`
//! (fires, cursors, waves, the freeze), `inventory` (what `inventory:` and
//! `check:` jobs project to, read by `inventory_queries`) and `alerts`
//! (check alerts until published). `migrations` holds the schema;
//! `write_behind` the optional database thread that stores heartbeats while
//! their projector goes on ([`Db::with_write_behind`]).

mod agent_rollouts;
mod alerts;
mod approvals;
mod audit;
mod core;
mod executions;
mod figures;
mod heartbeats;
mod inventory;
mod inventory_queries;
mod migrations;
mod pc_view;
mod pins;
mod results;
mod rollouts;
mod schedule_approvals;
mod schedules;
mod targets;
mod tokens;
mod write_behind;

pub use self::agent_rollouts::AgentRolloutRow;
pub use self::alerts::CheckAlertRecord;
pub use self::approvals::{ApprovalRequest, AWAITING_APPROVAL};
pub use self::audit::append_audit_in;
pub use self::core::{Db, DbDurability, DbError};
pub use self::executions::ExecutionFilter;
pub use self::executions::ExecutionRow;
pub use self::heartbeats::{AgentRow, Sighting};
pub use self::inventory_queries::{
    CheckState, CheckSummary, InventoryChange, InventoryFacts, InventoryRow, ProjectionSkip,
};
pub use self::pc_view::{PcFacts, PcResult};
pub use self::pins::Pin;
pub use self::results::{OverdueRun, ResultRow};
pub use self::rollouts::{
    RolloutRow, RolloutTargetRow, WaveCounts, ROLLOUT_ABORTED, ROLLOUT_COMPLETED, ROLLOUT_HALTED,
    ROLLOUT_PAUSED, ROLLOUT_RUNNING,
};
pub use self::schedule_approvals::{ScheduleApproval, APPROVED};
pub use self::schedules::{Freeze, PlannedWave};
pub use self::tokens::{NewToken, TokenCreateError, TokenRejection, TokenRow, TOKEN_PREFIX};
