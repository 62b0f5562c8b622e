//! What to simulate: the jobs a simulation fires ([`JobKind`]), the
//! workload ([`Workload`]) and the whole plan ([`FleetPlan`]), plus the
//! constants every part of the harness shares (the simulated epoch, agent
//! concurrency, the drain after the faults). A leaf: the harness and the
//! property checks both build on it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kanade_core::wire::RetrySpec;

use crate::schedule::FaultSchedule;

/// The jobs a simulation fires, each with its expected behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    /// Runs for a seeded time and exits with a seeded code (sometimes with
    /// output big enough to overflow into the object store).
    Work,
    /// Always exits 3; retried twice (`1 + 2` attempts).
    Flaky,
    /// Runs for 90 s with retries allowed; killed 5 s after it is fired —
    /// before the next command supersedes it in EXEC, so an agent cut off
    /// across the kill and back before that replays it (and must not run it).
    Killed,
    /// Fired with a start deadline already past: skipped with 125.
    Late,
    /// Revoked before it is fired: skipped with 126.
    Revoked,
    /// Fired with 30 s of jitter and revoked 5.5 s later: an agent whose
    /// jitter had not ended skips it with 126.
    RevokedInJitter,
    /// The fleet-day's hourly job, fired by the scheduler.
    Hourly,
    /// A rollout workload's job: runs 5–14 s (by pc) and fails on a
    /// seeded share of the pcs.
    Rollout,
}

impl JobKind {
    /// The rotation of a commands workload.
    pub const ROTATION: [JobKind; 6] = [
        JobKind::Work,
        JobKind::Flaky,
        JobKind::Killed,
        JobKind::Late,
        JobKind::Revoked,
        JobKind::RevokedInJitter,
    ];

    /// The job's id in the backend.
    pub fn job_id(self) -> &'static str {
        match self {
            JobKind::Work => "sim-work",
            JobKind::Flaky => "sim-flaky",
            JobKind::Killed => "sim-killed",
            JobKind::Late => "sim-late",
            JobKind::Revoked => "sim-revoked",
            JobKind::RevokedInJitter => "sim-revoked-in-jitter",
            JobKind::Hourly => "sim-hourly",
            JobKind::Rollout => "sim-rollout",
        }
    }

    /// The kind of a job id.
    pub fn from_job_id(id: &str) -> Option<JobKind> {
        Self::ROTATION
            .into_iter()
            .chain([JobKind::Hourly, JobKind::Rollout])
            .find(|kind| kind.job_id() == id)
    }

    /// Retries allowed after the first attempt.
    pub fn retries(self) -> u32 {
        self.retry().map_or(0, |r| r.max)
    }

    pub(crate) fn retry(self) -> Option<RetrySpec> {
        match self {
            JobKind::Flaky => Some(RetrySpec {
                max: 2,
                backoff_secs: 1,
            }),
            JobKind::Killed => Some(RetrySpec {
                max: 3,
                backoff_secs: 1,
            }),
            _ => None,
        }
    }

    pub(crate) fn jitter_secs(self) -> u64 {
        match self {
            JobKind::RevokedInJitter => 30,
            JobKind::Hourly => 300,
            _ => 5,
        }
    }

    /// `(script, timeout)` with seeded parameters.
    pub(crate) fn script(self, rng: &mut fastrand::Rng) -> (String, &'static str) {
        match self {
            JobKind::Work => {
                let out = if rng.bool() { 300_000 } else { 0 };
                (
                    format!(
                        "sleep={};exit={};out_bytes={out}",
                        rng.u64(0..20),
                        rng.u8(0..3)
                    ),
                    "60s",
                )
            }
            JobKind::Flaky => ("sleep=1;exit=3".into(), "30s"),
            JobKind::Killed => ("sleep=90;exit=0".into(), "2m"),
            JobKind::Late | JobKind::Revoked => ("exit=0".into(), "30s"),
            JobKind::RevokedInJitter => ("sleep=2;exit=0".into(), "30s"),
            JobKind::Hourly => (
                format!("sleep={};exit=0;out_bytes=200", rng.u64(1..120)),
                "10m",
            ),
            // The share failing is the workload's: see `rollout_script`.
            JobKind::Rollout => ("sleep=5;sleep_spread=10".into(), "2m"),
        }
    }
}

/// What the fleet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `count` executions on every agent, one every 10 s, rotating over
    /// [`JobKind::ROTATION`] (the property workload).
    Commands {
        /// How many.
        count: usize,
    },
    /// A scheduled fleet-day: the backend's scheduler fires an hourly job
    /// on every agent for `hours`; agents heartbeat every `heartbeat`.
    FleetDay {
        /// Simulated hours.
        hours: u64,
        /// Heartbeat interval (set live through `agent_config`).
        heartbeat: Duration,
    },
    /// One exec of [`JobKind::Rollout`] on every agent through `rollout`
    /// (20 s after the start, once the fleet is seen), its script failing
    /// on `failing_percent` % of the pcs.
    Rollout {
        /// The policy.
        rollout: kanade_backend::rollout::spec::RolloutSpec,
        /// Share of pcs whose run fails (exit 1).
        failing_percent: u32,
    },
}

/// The rollout workload's script: [`JobKind::Rollout`]'s, failing on
/// `failing_percent` % of the pcs (chosen by a hash of the pc and `seed`).
pub(crate) fn rollout_script(failing_percent: u32, seed: u64) -> String {
    format!("sleep=5;sleep_spread=10;fail_pct={failing_percent};fail_seed={seed}")
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Number of agents.
    pub agents: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Faults to inject.
    pub faults: FaultSchedule,
    /// What the fleet does.
    pub workload: Workload,
    /// Keep the trace lines (not only their hash) in the outcome.
    pub keep_trace: bool,
    /// Where agents' state directories and the backend's database go
    /// (default: `/dev/shm` when present, else the temp dir). Removed at the end.
    pub state_root: Option<PathBuf>,
}

impl FleetPlan {
    /// The property workload: `commands` executions on `agents` agents.
    pub fn commands(agents: usize, commands: usize, seed: u64, faults: FaultSchedule) -> Self {
        Self {
            agents,
            seed,
            faults,
            workload: Workload::Commands { count: commands },
            keep_trace: true,
            state_root: None,
        }
    }

    /// A rollout of [`JobKind::Rollout`] on `agents` agents through
    /// `rollout`, failing on `failing_percent` % of them.
    pub fn rollout(
        agents: usize,
        seed: u64,
        faults: FaultSchedule,
        rollout: kanade_backend::rollout::spec::RolloutSpec,
        failing_percent: u32,
    ) -> Self {
        Self {
            agents,
            seed,
            faults,
            workload: Workload::Rollout {
                rollout,
                failing_percent,
            },
            keep_trace: true,
            state_root: None,
        }
    }

    /// A scheduled fleet-day of `hours` with 5-minute heartbeats.
    pub fn fleet_day(agents: usize, hours: u64, seed: u64, faults: FaultSchedule) -> Self {
        Self {
            agents,
            seed,
            faults,
            workload: Workload::FleetDay {
                hours,
                heartbeat: Duration::from_secs(300),
            },
            keep_trace: false,
            state_root: None,
        }
    }
}

/// The simulated wall clock starts here.
pub fn sim_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Commands each simulated agent runs at once.
pub const SIM_CONCURRENCY: usize = 4;

/// How long after the faults end the fleet gets to settle (outbox
/// backoff, consumer redeliveries, the reaper's grace).
pub const DRAIN: Duration = Duration::from_secs(600);

/// The fleet's command-signing key: derived from the plan's seed, so runs
/// are reproducible (a simulation key, never a real one).
pub(crate) fn fleet_signer(seed: u64) -> kanade_core::policy::signature::CommandSigner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..16].copy_from_slice(b"kanade-s");
    kanade_core::policy::signature::CommandSigner::from_seed("sim-fleet", bytes)
}

/// The prefix of every forged command's request id.
pub const FORGED_PREFIX: &str = "forged-";
