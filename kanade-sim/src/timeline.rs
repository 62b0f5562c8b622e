//! The harness's timelines: what the operator does (fire, revoke, kill)
//! and what the fault driver does (faults, reconnects, the calm), each at
//! a point in simulated time, drawn from a [`FleetPlan`].

use std::time::Duration;

use crate::plan::{FleetPlan, JobKind, Workload};
use crate::schedule::Fault;

/// When a rollout workload's exec goes out.
pub(crate) const ROLLOUT_FIRED_AT: Duration = Duration::from_secs(20);

/// Something the harness does at a point in simulated time.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Fire command `c` of the commands workload.
    Fire(usize),
    /// Revoke the job of command `c` (in its jitter).
    Revoke(usize),
    /// Kill the execution of command `c`.
    Kill(usize),
    /// Apply a fault.
    Fault(Fault),
    /// Bring back every link whose outages are over.
    Reconnect,
    /// The faults end: calm network, every link back.
    Calm,
}

/// A plan's steps, split between the operator and the fault driver.
pub(crate) struct Timeline {
    /// The operator's steps (fire, revoke, kill), in time order.
    pub(crate) workload: Vec<(Duration, Step)>,
    /// The fault driver's steps (faults, reconnects, calm), in time order.
    pub(crate) faults: Vec<(Duration, Step)>,
    /// When the workload and the faults are both over.
    pub(crate) calm: Duration,
}

impl Timeline {
    /// The timelines of `plan`.
    pub(crate) fn of(plan: &FleetPlan) -> Self {
        let mut steps = Vec::new();
        let mut workload_ends = Duration::ZERO;
        if let Workload::Commands { count } = plan.workload {
            for c in 0..count {
                let at = Duration::from_secs(5 + 10 * c as u64);
                steps.push((at, Step::Fire(c)));
                match JobKind::ROTATION[c % JobKind::ROTATION.len()] {
                    JobKind::Killed => steps.push((at + Duration::from_secs(5), Step::Kill(c))),
                    JobKind::RevokedInJitter => {
                        steps.push((at + Duration::from_millis(5_500), Step::Revoke(c)))
                    }
                    _ => {}
                }
                workload_ends = at + Duration::from_secs(15);
            }
        }
        if let Workload::Rollout { .. } = plan.workload {
            // Once every agent's first heartbeat is in.
            steps.push((ROLLOUT_FIRED_AT, Step::Fire(0)));
            workload_ends = ROLLOUT_FIRED_AT;
        }
        if let Workload::FleetDay { hours, .. } = plan.workload {
            workload_ends = Duration::from_secs(hours * 3600);
        }
        for fault in plan.faults.in_order() {
            let ends = fault.ends();
            steps.push((fault.at(), Step::Fault(fault)));
            if ends > Duration::ZERO {
                steps.push((ends, Step::Reconnect));
            }
        }
        let calm = workload_ends.max(plan.faults.last_fault_ends());
        steps.push((calm, Step::Calm));
        // Stable: steps at one instant keep the order above.
        steps.sort_by_key(|(at, _)| *at);
        let (faults, workload) = steps
            .into_iter()
            .partition(|(_, step)| matches!(step, Step::Fault(_) | Step::Reconnect | Step::Calm));
        Timeline {
            workload,
            faults,
            calm,
        }
    }
}
