//! Rollouts that stop themselves (DESIGN §11): an execution's targets
//! dispatched in batches through a sliding window of targets in flight,
//! optionally in ordered waves (a canary group first) with a bake time
//! between them, and an error budget judged on every result that halts the
//! rollout when breached — nothing more is dispatched, and optionally the
//! job version is revoked and running copies killed.
//!
//! [`spec`] is the policy as written and its validation; [`decide`] the
//! pure decisions (waves, the budget, the next step). The backend keeps
//! the state in SQLite (`rollouts`, `rollout_targets`), moved in the same
//! transaction as the result that changes it, and its driver dispatches.
//!
//! ```
//! use kanade_backend::rollout::spec::RolloutSpec;
//! use kanade_backend::rollout::decide::breach;
//!
//! let spec: RolloutSpec = serde_json::from_str(r#"{"batch": 3, "max_errors": 1}"#).unwrap();
//! let policy = spec.validate().unwrap().expect("a self-stopping rollout");
//! assert_eq!(policy.window(12), 3);
//! assert_eq!(breach(&policy, 2, 5).as_deref(), Some("2 errors of 5 results > 1"));
//! ```

pub mod decide;
pub mod spec;
