//! The wire contract: every JSON message kanade sends, on every transport.
//!
//! Decoding is tolerant (unknown fields are ignored, optional fields default)
//! and encoding matches the published kanade 0.101 shapes, so messages
//! captured from a reference deployment decode and re-encode unchanged.

mod agent_schedule;
mod audit;
mod command;
mod config;
mod events;
mod groups;
mod inventory;
mod kill;
mod result;
pub mod schema;
pub mod timestamp;

pub use agent_schedule::{AgentSchedule, AgentTarget, FleetFreeze, AGENT_FIRE_PREFIX, FREEZE_KEY};
pub use audit::{AuditEvent, AuditSource};
pub use command::{
    CheckAlert, CheckHint, Command, EmitConfig, EmitKind, RetrySpec, RunAs, Shell, Staleness,
};
pub use config::{AgentConfigScope, EffectiveConfig};
pub use events::{EventStarted, Heartbeat, ObsEvent};
pub use groups::AgentGroups;
pub use inventory::{Disk, HwInventory, NetInterface, NetInventory, SoftwarePackage, SwInventory};
pub use kill::KillRecord;
pub use result::ExecResult;
