//! The rollout properties (DESIGN §11), as pure checks over what a
//! simulation left: the rollout's state and targets in the backend's
//! store, the stored results, and the runner's record of real runs.
//!
//! - never more runs at once than the window (`max_concurrency`, or the
//!   batch), measured on the agents' side;
//! - every target runs the command at most once (the general check of runs
//!   per request covers it);
//! - a halted rollout dispatched nothing after its halt;
//! - a halt is justified and on time: its counts breach the budget, the
//!   same counts without the last result did not, and no more results came
//!   after it than could be in flight;
//! - a rollout that did not halt completed, and each of its targets has
//!   exactly one result or was shown `unreached` (offline at its turn or
//!   never started) — only an agent that was cut off can be unreached.

use std::collections::BTreeMap;

use kanade_backend::rollout::decide::breach;

use crate::outcome::FleetOutcome;
use crate::rollout_record::RolloutRecord;
use crate::schedule::pc_name;
use crate::violation::Violation;

/// `E errors of R results > B` back into `(E, R)`.
fn halt_counts(reason: &str) -> Option<(u64, u64)> {
    let (errors, rest) = reason.split_once(" errors of ")?;
    let (results, _) = rest.split_once(" results > ")?;
    Some((errors.parse().ok()?, results.parse().ok()?))
}

/// The most intervals `[start, end)` overlapping at once.
fn most_overlapping(mut edges: Vec<(std::time::Duration, i32)>) -> usize {
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most.max(0) as usize
}

impl FleetOutcome {
    /// Checks the rollout properties of every rollout.
    pub fn check_rollouts(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        for record in &self.rollouts {
            self.check_rollout(record, &mut violations);
        }
        violations
    }

    fn check_rollout(&self, record: &RolloutRecord, violations: &mut Vec<Violation>) {
        let row = &record.row;
        let exec_id = row.exec_id.clone();
        let Some(policy) = row.spec.validate().ok().flatten() else {
            return;
        };
        let total = record.targets.len() as u64;
        let window = policy.window(total);
        let Some(execution) = self.executions.iter().find(|e| e.exec_id == exec_id) else {
            return;
        };
        // Runs at once, on the agents' side (a run its agent died under
        // ended then: it is counted from start to start).
        let mut edges = Vec::new();
        for run in self
            .invocations
            .iter()
            .filter(|i| i.request_id == execution.request_id)
        {
            let end = run.ended.map_or(run.started, |(_, at)| at);
            edges.push((run.started, 1));
            edges.push((end, -1));
        }
        let most = most_overlapping(edges);
        if most as u64 > window {
            violations.push(Violation::WindowOverfilled {
                exec_id: exec_id.clone(),
                most,
                window,
            });
        }
        let results = self
            .results
            .get(&exec_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut per_pc: BTreeMap<&str, usize> = BTreeMap::new();
        for result in results {
            *per_pc.entry(result.pc_id.as_str()).or_default() += 1;
        }
        if let Some(halted_at) = &row.halted_at {
            for target in &record.targets {
                if let Some(at) = &target.dispatched_at {
                    if at > halted_at {
                        violations.push(Violation::DispatchedAfterHalt {
                            exec_id: exec_id.clone(),
                            pc: target.pc_id.clone(),
                            dispatched_at: at.clone(),
                            halted_at: halted_at.clone(),
                        });
                    }
                }
            }
            let reason = row.reason.clone().unwrap_or_default();
            let bad = |why: String| Violation::BadHalt {
                exec_id: exec_id.clone(),
                reason: reason.clone(),
                why,
            };
            match halt_counts(&reason) {
                None => violations.push(bad("does not read as a breach".into())),
                Some((errors, judged)) => {
                    if breach(&policy, errors, judged).is_none() {
                        violations.push(bad("is within the budget".into()));
                    }
                    if errors == 0
                        || breach(&policy, errors - 1, judged.saturating_sub(1)).is_some()
                    {
                        violations.push(bad(
                            "came later than the result that breached the budget".into()
                        ));
                    }
                    let counted = results.iter().filter(|r| !r.skipped).count() as u64;
                    if counted > judged + window {
                        violations.push(bad(format!(
                            "was followed by {} results, more than the window of {window} in flight",
                            counted - judged
                        )));
                    }
                }
            }
            return;
        }
        if row.state != "completed" {
            violations.push(Violation::RolloutUnfinished {
                exec_id: exec_id.clone(),
                state: row.state.clone(),
            });
        }
        for target in &record.targets {
            let stored = per_pc.get(target.pc_id.as_str()).copied().unwrap_or(0);
            let excused =
                target.phase == "unreached" && stored == 0 && self.was_cut_off(&target.pc_id);
            let answered = target.phase == "done" && stored == 1;
            if !(answered || excused) {
                violations.push(Violation::RolloutTarget {
                    exec_id: exec_id.clone(),
                    pc: target.pc_id.clone(),
                    phase: target.phase.clone(),
                    results: stored,
                });
            }
        }
    }

    /// Whether agent `pc` was ever cut off (offline, a dropped delivery, a
    /// crash) or its clock stepped.
    fn was_cut_off(&self, pc: &str) -> bool {
        let index = (0..self.agents).find(|i| pc_name(*i) == pc);
        index.is_some_and(|i| {
            self.exposures
                .get(i)
                .is_some_and(|e| !e.offline.is_empty() || !e.instants.is_empty())
                || self.schedule.faults.iter().any(|f| {
                    matches!(f, crate::schedule::Fault::ClockStep { pc, .. } if *pc == i)
                        || matches!(f, crate::schedule::Fault::BrokerRestart { .. })
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_reasons_read_back() {
        assert_eq!(halt_counts("2 errors of 6 results > 1"), Some((2, 6)));
        assert_eq!(halt_counts("5 errors of 37 results > 5%"), Some((5, 37)));
        assert_eq!(halt_counts("aborted by ops"), None);
    }

    #[test]
    fn overlaps_count_ends_before_starts() {
        use std::time::Duration as D;
        let edges = vec![
            (D::from_secs(0), 1),
            (D::from_secs(5), -1),
            (D::from_secs(5), 1),
            (D::from_secs(9), -1),
            (D::from_secs(1), 1),
            (D::from_secs(3), -1),
        ];
        assert_eq!(most_overlapping(edges), 2);
    }
}
