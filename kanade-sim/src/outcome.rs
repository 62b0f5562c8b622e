//! What a simulation produced, and the properties it must satisfy, as pure
//! checks over the backend's store and the runner's record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kanade_agent::RunEnd;
use kanade_backend::db::{ExecutionRow, ResultRow};

use crate::plan::{sim_epoch, JobKind};
use crate::runner::Invocation;
use crate::schedule::{pc_name, FaultSchedule};
use crate::violation::Violation;

/// An operator action the harness took on an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The execution.
    pub exec_id: String,
    /// `revoked` or `killed`.
    pub what: &'static str,
    /// Simulated time it went through.
    pub at: Duration,
}

/// When one agent could have missed a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Disconnected from..until.
    pub offline: Vec<(Duration, Duration)>,
    /// Dropped command deliveries and crashes.
    pub instants: Vec<Duration>,
}

impl Exposure {
    /// Whether the agent may have missed a command that was the newest on
    /// its subject from `fired` to `superseded`: it was cut off (offline, a
    /// dropped delivery, a crash) in that window and could not have caught
    /// up — the replay consumer redelivers within `catch_up` of the link
    /// coming back — before the newer command replaced it. Both ends are
    /// included: a command superseded at the instant it went out is only as
    /// safe as the deliveries of that instant.
    pub fn may_have_missed(
        &self,
        fired: Duration,
        superseded: Duration,
        catch_up: Duration,
    ) -> bool {
        let too_late = |back: Duration| back.saturating_add(catch_up) >= superseded;
        self.offline
            .iter()
            .any(|(a, b)| *a <= superseded && *b >= fired && too_late(*b))
            || self
                .instants
                .iter()
                .any(|t| *t >= fired && *t <= superseded && too_late(*t))
    }

    /// Whether the agent was disconnected the whole time from `from` to
    /// `to` (offline windows that touch count as one).
    pub fn cut_off_throughout(&self, from: Duration, to: Duration) -> bool {
        let mut windows = self.offline.clone();
        windows.sort();
        let mut covered: Option<Duration> = None;
        for (a, b) in windows {
            covered = match covered {
                // Touching or overlapping: one longer window.
                Some(end) if a <= end => Some(end.max(b)),
                // A gap: the agent was back; nothing later extends it.
                Some(end) => Some(end),
                None if a <= from && b >= from => Some(b),
                None => None,
            };
            if covered.is_some_and(|end| end >= to) {
                return true;
            }
        }
        false
    }
}

/// Everything a simulation produced.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// Agents simulated.
    pub agents: usize,
    /// The seed.
    pub seed: u64,
    /// The faults injected.
    pub schedule: FaultSchedule,
    /// Executions in the backend's store.
    pub executions: Vec<ExecutionRow>,
    /// Stored results per execution.
    pub results: BTreeMap<String, Vec<ResultRow>>,
    /// Rollouts (their state and targets), checked by their own
    /// properties ([`FleetOutcome::check_rollouts`]).
    pub rollouts: Vec<crate::rollout_record::RolloutRecord>,
    /// Every runner invocation.
    pub invocations: Vec<Invocation>,
    /// Revokes and kills.
    pub operations: Vec<Operation>,
    /// Per agent, when it could have missed a command.
    pub exposures: Vec<Exposure>,
    /// Messages on the bus by first subject token.
    pub messages: BTreeMap<String, u64>,
    /// Faults the injectors recorded.
    pub fault_events: u64,
    /// Transactions the backend's journal-less simulated database rolled
    /// back after writing (any is one [`Violation::UnjournaledRollback`]
    /// with the count; 0 in a sound run).
    pub database_rollbacks: u64,
    /// The trace (empty unless the plan kept it).
    pub trace: Vec<String>,
    /// sha256 of the trace.
    pub trace_hash: String,
    /// Simulated time covered.
    pub simulated: Duration,
    /// Wall time taken.
    pub wall: Duration,
}

/// Results that are legitimately missing: the command was superseded in
/// EXEC (which keeps the newest command per subject) while the agent could
/// not receive it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// (execution, agent) pairs with exactly one stored result.
    pub delivered: usize,
    /// Pairs excused as superseded while the agent was cut off.
    pub superseded: usize,
}

fn sim_time(rfc3339: &str) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    (at.with_timezone(&chrono::Utc) - sim_epoch()).to_std().ok()
}

impl FleetOutcome {
    /// Simulated events: every message on the bus plus every injected fault
    /// and every script run.
    pub fn events(&self) -> u64 {
        self.messages.values().sum::<u64>() + self.fault_events + self.invocations.len() as u64
    }

    fn operation(&self, exec_id: &str, what: &str) -> Option<Duration> {
        self.operations
            .iter()
            .find(|o| o.exec_id == exec_id && o.what == what)
            .map(|o| o.at)
    }

    /// Executions whose command went out, oldest first, with when.
    fn published(&self) -> Vec<(&ExecutionRow, Duration)> {
        let mut published: Vec<_> = self
            .executions
            .iter()
            .filter(|e| e.status != "failed")
            // A rollout dispatches its own way: see `check_rollouts`.
            .filter(|e| !self.rollouts.iter().any(|r| r.row.exec_id == e.exec_id))
            .filter_map(|e| Some((e, sim_time(&e.created_at)?)))
            .collect();
        published.sort_by_key(|(e, at)| (*at, e.exec_id.clone()));
        published
    }

    /// Checks every property; returns the violations (empty: all hold) and
    /// the delivery tally.
    pub fn check(&self) -> (Vec<Violation>, Tally) {
        let mut violations = Vec::new();
        if self.database_rollbacks > 0 {
            violations.push(Violation::UnjournaledRollback {
                count: self.database_rollbacks,
            });
        }
        let mut tally = Tally::default();
        let published = self.published();
        let mut runs: BTreeMap<(&str, &str), Vec<&Invocation>> = BTreeMap::new();
        for invocation in &self.invocations {
            if invocation
                .request_id
                .starts_with(crate::plan::FORGED_PREFIX)
            {
                violations.push(Violation::ForgedRan {
                    pc: invocation.pc.clone(),
                    request_id: invocation.request_id.clone(),
                });
            }
            runs.entry((&invocation.pc, &invocation.request_id))
                .or_default()
                .push(invocation);
        }
        for (i, (execution, fired_at)) in published.iter().enumerate() {
            // A later command on the same subject supersedes this one in
            // EXEC (keep-last per subject) — a forged one too: without
            // broker permissions, an attacker can evict a command from
            // replay (a denial of service), though never run one.
            let next_legit = published.get(i + 1).map(|(_, at)| *at);
            let next_forge = self
                .schedule
                .faults
                .iter()
                .filter_map(|f| match f {
                    crate::schedule::Fault::Forge { at } if at >= fired_at => Some(*at),
                    _ => None,
                })
                .min();
            let superseded_at = match (next_legit, next_forge) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let kind = JobKind::from_job_id(&execution.job_id);
            let results = self
                .results
                .get(&execution.exec_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            self.check_delivery(
                execution,
                *fired_at,
                superseded_at,
                results,
                &mut violations,
                &mut tally,
            );
            check_counters(execution, results, &mut violations);
            for result in results {
                let invoked = runs
                    .get(&(result.pc_id.as_str(), execution.request_id.as_str()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                self.check_gates(execution, kind, result, invoked, &mut violations);
                if result.attempts > 1 + i64::from(kind.map_or(0, JobKind::retries)) {
                    violations.push(Violation::TooManyAttempts {
                        exec_id: execution.exec_id.clone(),
                        pc: result.pc_id.clone(),
                        attempts: result.attempts,
                    });
                }
            }
        }
        for ((pc, request), invoked) in &runs {
            check_runs(pc, request, invoked, &self.executions, &mut violations);
        }
        violations.extend(self.check_rollouts());
        (violations, tally)
    }

    fn check_delivery(
        &self,
        execution: &ExecutionRow,
        fired_at: Duration,
        superseded_at: Option<Duration>,
        results: &[ResultRow],
        violations: &mut Vec<Violation>,
        tally: &mut Tally,
    ) {
        let mut by_pc: BTreeMap<&str, Vec<&ResultRow>> = BTreeMap::new();
        for result in results {
            by_pc.entry(&result.pc_id).or_default().push(result);
        }
        for agent in 0..self.agents {
            let pc = pc_name(agent);
            let mine = by_pc
                .get(pc.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            match mine {
                [one] if one.reaped => violations.push(Violation::OnlyReaped {
                    exec_id: execution.exec_id.clone(),
                    pc,
                }),
                [_] => tally.delivered += 1,
                [] => {
                    let catch_up = kanade_agent::REPLAY_ACK_WAIT
                        + Duration::from_secs(2)
                        + self.schedule.network.max_delay;
                    let excused = superseded_at.is_some_and(|until| {
                        self.exposures
                            .get(agent)
                            .is_some_and(|e| e.may_have_missed(fired_at, until, catch_up))
                    });
                    if excused {
                        tally.superseded += 1;
                    } else {
                        violations.push(Violation::NoResult {
                            exec_id: execution.exec_id.clone(),
                            job_id: execution.job_id.clone(),
                            pc,
                            fired_at,
                            superseded_at,
                        });
                    }
                }
                more => violations.push(Violation::SeveralResults {
                    exec_id: execution.exec_id.clone(),
                    pc,
                    count: more.len(),
                }),
            }
        }
    }

    fn check_gates(
        &self,
        execution: &ExecutionRow,
        kind: Option<JobKind>,
        result: &ResultRow,
        invoked: &[&Invocation],
        violations: &mut Vec<Violation>,
    ) {
        let pc = &result.pc_id;
        let expected_skip = match kind {
            Some(JobKind::Late) => Some(125),
            Some(JobKind::Revoked) => Some(126),
            _ => None,
        };
        if let Some(code) = expected_skip {
            if (result.exit_code, result.skipped) != (code, true) || !invoked.is_empty() {
                violations.push(Violation::NotSkipped {
                    exec_id: execution.exec_id.clone(),
                    job_id: execution.job_id.clone(),
                    pc: pc.clone(),
                    exit_code: result.exit_code,
                    skipped: result.skipped,
                    runs: invoked.len(),
                    expected: code,
                });
            }
        }
        // The revoke or kill is timed when the operator's call returned,
        // the run when the runner was called — after the agent's last check
        // and its start-event publish, which an injected delay can hold up.
        // A run within that bound raced the operator.
        let publish_delay = if self.schedule.network.delay > 0 {
            self.schedule.network.max_delay
        } else {
            Duration::ZERO
        };
        // A kill is durable: nothing of the execution starts after it,
        // on agents that were running, waiting, offline or restarting.
        if let Some(killed_at) = self.operation(&execution.exec_id, "killed") {
            for run in invoked {
                if run.started > killed_at + publish_delay {
                    violations.push(Violation::StartedAfterKill {
                        exec_id: execution.exec_id.clone(),
                        pc: pc.clone(),
                        started: run.started,
                        killed_at,
                    });
                }
            }
        }
        if kind == Some(JobKind::RevokedInJitter) {
            if result.skipped && result.exit_code != 126 {
                violations.push(Violation::WrongSkipCode {
                    exec_id: execution.exec_id.clone(),
                    pc: pc.clone(),
                    exit_code: result.exit_code,
                });
            }
            if let Some(revoked_at) = self.operation(&execution.exec_id, "revoked") {
                // A revoke is the job's state: it holds until the operator
                // activates the job again (for its next round), and a copy
                // of the old command that starts after that may run.
                let job = format!("job:{}", JobKind::RevokedInJitter.job_id());
                let until = self
                    .operations
                    .iter()
                    .filter(|o| o.exec_id == job && o.what == "activated" && o.at > revoked_at)
                    .map(|o| o.at)
                    .min()
                    .unwrap_or(Duration::MAX);
                // An agent cut off from the broker from before the revoke
                // until it ran could not know of it: with `cached`
                // staleness it runs on its last view (DESIGN §4).
                let exposure = (0..self.agents)
                    .find(|n| pc_name(*n) == *pc)
                    .and_then(|n| self.exposures.get(n));
                for run in invoked {
                    let could_not_know =
                        exposure.is_some_and(|e| e.cut_off_throughout(revoked_at, run.started));
                    if run.started > revoked_at + publish_delay
                        && run.started < until
                        && !could_not_know
                    {
                        violations.push(Violation::RanAfterRevoke {
                            exec_id: execution.exec_id.clone(),
                            pc: pc.clone(),
                            ran_at: run.started,
                            revoked_at,
                        });
                    }
                }
            }
        }
    }

    /// A readable account for a failing case: the schedule, the seed and
    /// the violations.
    pub fn report(&self, violations: &[Violation]) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "seed {} ({} agents), schedule:\n{}",
            self.seed, self.agents, self.schedule
        );
        let _ = writeln!(text, "trace hash {}", self.trace_hash);
        for violation in violations.iter().take(20) {
            let _ = writeln!(text, "  - {violation}");
        }
        if violations.len() > 20 {
            let _ = writeln!(text, "  … and {} more", violations.len() - 20);
        }
        text
    }
}

/// Counters of an execution equal what its stored results say.
fn check_counters(
    execution: &ExecutionRow,
    results: &[ResultRow],
    violations: &mut Vec<Violation>,
) {
    let count = |f: &dyn Fn(&ResultRow) -> bool| results.iter().filter(|r| f(r)).count() as i64;
    let succeeded = count(&|r| !r.skipped && r.exit_code == 0);
    let failed = count(&|r| !r.skipped && r.exit_code != 0);
    let skipped = count(&|r| r.skipped);
    let stored = (
        execution.succeeded,
        execution.failed,
        execution.skipped,
        execution.started,
    );
    let expected = (succeeded, failed, skipped, succeeded + failed);
    if stored != expected {
        violations.push(Violation::Counters {
            exec_id: execution.exec_id.clone(),
            stored,
            expected,
        });
    }
    let reported = succeeded + failed + skipped;
    let status_ok = match execution.status.as_str() {
        "cancelled" => true,
        "completed" => reported >= execution.targeted,
        _ => reported < execution.targeted,
    };
    if !status_ok {
        violations.push(Violation::Status {
            exec_id: execution.exec_id.clone(),
            status: execution.status.clone(),
            reported,
            targeted: execution.targeted,
        });
    }
}

/// One agent's runs of one request: never twice from the first attempt,
/// numbered attempts within `1 + max`, nothing after a kill.
fn check_runs(
    pc: &str,
    request: &str,
    invoked: &[&Invocation],
    executions: &[ExecutionRow],
    violations: &mut Vec<Violation>,
) {
    let first_attempts = invoked.iter().filter(|i| i.attempt == 1).count();
    if first_attempts > 1 {
        violations.push(Violation::RanTwice {
            request_id: request.to_owned(),
            pc: pc.to_owned(),
            runs: first_attempts,
        });
    }
    let retries = executions
        .iter()
        .find(|e| e.request_id == request)
        .and_then(|e| JobKind::from_job_id(&e.job_id))
        .map_or(0, JobKind::retries);
    for (n, run) in invoked.iter().enumerate() {
        if run.attempt as usize != n + 1 || run.attempt > 1 + retries {
            violations.push(Violation::AttemptOutOfOrder {
                request_id: request.to_owned(),
                pc: pc.to_owned(),
                run: n + 1,
                attempt: run.attempt,
                retries,
            });
        }
        if n > 0 && matches!(invoked[n - 1].ended, Some((RunEnd::Killed, _))) {
            violations.push(Violation::AfterKill {
                request_id: request.to_owned(),
                pc: pc.to_owned(),
                attempt: run.attempt,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_off_throughout_needs_one_unbroken_stretch() {
        let s = Duration::from_secs;
        let exposure = Exposure {
            offline: vec![(s(20), s(30)), (s(0), s(5)), (s(30), s(40)), (s(50), s(60))],
            instants: vec![],
        };
        assert!(exposure.cut_off_throughout(s(25), s(39)));
        assert!(exposure.cut_off_throughout(s(20), s(40)));
        assert!(!exposure.cut_off_throughout(s(25), s(45)));
        assert!(!exposure.cut_off_throughout(s(4), s(21)));
        assert!(!exposure.cut_off_throughout(s(10), s(12)));
        assert!(exposure.cut_off_throughout(s(55), s(60)));
    }
}
