//! # kanade-sim
//!
//! Deterministic fleet simulation: the real backend (SQLite store,
//! projectors, reaper, scheduler) and N real agents on one in-memory bus,
//! each client behind its own fault-injection layer, scripts run by a
//! simulated runner, on a current-thread tokio runtime with paused time.
//! One seed drives every random choice, so the same plan gives the same
//! trace (and trace hash).
//!
//! - [`FaultSchedule`]: timed faults a human can read (`at 12s: partition
//!   pc-0007 for 1m 30s`, `at 30s: crash-restart pc-0003 (state dir kept)`,
//!   `at 45s: broker restart (5s down)`) plus drop / duplicate / delay /
//!   reorder rates, generated and shrunk by [`schedule_strategy`].
//! - [`Fleet`] / [`simulate`]: runs a [`FleetPlan`] (a property workload of
//!   commands, or a scheduled fleet-day) and returns a [`FleetOutcome`].
//! - [`FleetOutcome::check`]: the properties — one stored result per
//!   command and agent (unless EXEC superseded it while the agent was cut
//!   off), no request run twice, gate skips with the right code, nothing run
//!   after a revoke in its jitter, counters equal to the stored results,
//!   retries within `1 + max` and never after a kill. Each broken property
//!   is a [`Violation`]; a run that cannot be set up is a [`SimError`].
//!
//! ```
//! use kanade_sim::{simulate, Fault, FaultSchedule, FleetPlan};
//! use std::time::Duration;
//!
//! let schedule = FaultSchedule::new(vec![
//!     Fault::Partition { at: Duration::from_secs(12), pc: 1, for_: Duration::from_secs(20) },
//!     Fault::BrokerRestart { at: Duration::from_secs(30), for_: Duration::from_secs(3) },
//! ]);
//! let outcome = simulate(FleetPlan::commands(3, 6, 7, schedule)).unwrap();
//! let (violations, tally) = outcome.check();
//! assert!(violations.is_empty(), "{}", outcome.report(&violations));
//! assert!(tally.delivered > 0);
//! println!("trace hash {}", outcome.trace_hash);
//! ```

mod agents;
mod error;
mod faults;
mod fleet;
mod operator;
mod outcome;
mod plan;
mod rollout_check;
mod rollout_record;
mod runner;
mod schedule;
mod timeline;
mod trace;
mod violation;

pub use error::SimError;
pub use fleet::{simulate, Fleet};
pub use outcome::{Exposure, FleetOutcome, Operation, Tally};
pub use plan::{sim_epoch, FleetPlan, JobKind, Workload, DRAIN};
pub use rollout_record::RolloutRecord;
pub use runner::{Invocation, SimRunner};
pub use schedule::{
    fault_strategy, network_strategy, pc_name, rollout_fault_strategy, rollout_schedule_strategy,
    schedule_strategy, Fault, FaultSchedule, NetworkRates,
};
pub use violation::Violation;
