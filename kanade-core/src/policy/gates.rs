//! The pre-run gates, evaluated in a fixed order:
//! strict staleness (127) → version pin (124, broker-delivered only) →
//! revoke (126) → unsupported shell / `run_as` (122) → start deadline (125).
//!
//! The agent runs the gates before jitter and the concurrency permit, and
//! again after, so a revoke or deadline that happened during the wait wins.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::exit_codes;
use crate::names::SCRIPT_STATUS_REVOKED;
use crate::wire::{Command, RunAs, Shell, Staleness};

/// How the command reached the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// From the broker (live or replayed): the version pin applies.
    Broker,
    /// From the agent's own scheduler: the version pin does not apply.
    Local,
}

/// What this host can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSupport {
    /// Shells installed here.
    pub shells: Vec<Shell>,
    /// Whether an interactive user session exists (needed by `run_as`
    /// `user` and `system_gui`).
    pub interactive_sessions: bool,
}

impl HostSupport {
    /// A host that can run every shell and `run_as` mode.
    pub fn everything() -> Self {
        Self {
            shells: Shell::ALL.to_vec(),
            interactive_sessions: true,
        }
    }
}

/// Everything the gates look at besides the command.
#[derive(Debug, Clone, Copy)]
pub struct GateInputs<'a> {
    /// The decision instant, on this agent's clock (staleness is measured
    /// against `last_fresh_at` on the same clock).
    pub now: DateTime<Utc>,
    /// The same instant on the backend's clock as this agent estimates it
    /// ([`clock::OffsetEstimate::fleet_now`](super::clock::OffsetEstimate::fleet_now)):
    /// `deadline_at` is the backend's time, so the deadline gate uses this.
    /// Pass `now` when no estimate exists.
    pub fleet_now: DateTime<Utc>,
    /// How the command arrived.
    pub delivery: Delivery,
    /// Last instant the agent was known connected with fresh KV state
    /// (`now` while connected; `None` if never).
    pub last_fresh_at: Option<DateTime<Utc>>,
    /// `script_current[command.id]`, if the agent has a value.
    pub script_current: Option<&'a str>,
    /// `script_status[command.id]`, if the agent has a value.
    pub script_status: Option<&'a str>,
    /// What this host can run.
    pub host: &'a HostSupport,
}

/// Which gate stopped a command, with the facts it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Strict staleness could not prove fresh state.
    Stale {
        /// The policy's allowance (zero when it did not parse).
        max_cache_age: Duration,
        /// How old the state was (`None`: never fresh).
        age: Option<Duration>,
    },
    /// `script_current` pins another version.
    VersionMismatch {
        /// The pinned version.
        current: String,
        /// The command's version.
        command: String,
    },
    /// `script_status` says `REVOKED`.
    Revoked,
    /// The shell is not installed here.
    ShellUnsupported(Shell),
    /// `run_as` needs an interactive session this host does not have.
    RunAsUnsupported(RunAs),
    /// The start deadline has passed.
    DeadlinePassed {
        /// The command's deadline.
        deadline: DateTime<Utc>,
    },
}

impl StopReason {
    /// The reserved exit code reported for this stop.
    pub fn exit_code(&self) -> i32 {
        match self {
            StopReason::Stale { .. } => exit_codes::STALE,
            StopReason::VersionMismatch { .. } => exit_codes::VERSION_MISMATCH,
            StopReason::Revoked => exit_codes::REVOKED,
            StopReason::ShellUnsupported(_) | StopReason::RunAsUnsupported(_) => {
                exit_codes::UNSUPPORTED
            }
            StopReason::DeadlinePassed { .. } => exit_codes::DEADLINE_PASSED,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Stale {
                max_cache_age,
                age: Some(age),
            } => write!(
                f,
                "skipped: strict staleness: state is {} old, allowed {}",
                humantime::format_duration(*age),
                humantime::format_duration(*max_cache_age)
            ),
            StopReason::Stale { age: None, .. } => {
                f.write_str("skipped: strict staleness: agent has never had fresh state")
            }
            StopReason::VersionMismatch { current, command } => write!(
                f,
                "skipped: version pin: script_current is {current:?}, command is {command:?}"
            ),
            StopReason::Revoked => f.write_str("skipped: script is revoked"),
            StopReason::ShellUnsupported(shell) => {
                write!(
                    f,
                    "skipped: shell {:?} is not available on this host",
                    shell.as_str()
                )
            }
            StopReason::RunAsUnsupported(run_as) => write!(
                f,
                "skipped: run_as {run_as:?} needs an interactive session and this host has none"
            ),
            StopReason::DeadlinePassed { deadline } => {
                write!(f, "skipped: deadline expired at {}", deadline.to_rfc3339())
            }
        }
    }
}

/// A command stopped by a gate: what to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateStop {
    /// The reserved exit code.
    pub exit_code: i32,
    /// Whether the result is a skip (always true for gate stops).
    pub skipped: bool,
    /// Why, with the facts the gate saw.
    pub reason: StopReason,
}

/// The verdict of [`evaluate_gates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// Every gate passed.
    Run,
    /// A gate stopped the command.
    Stop(GateStop),
}

impl GateDecision {
    /// Whether the command may run.
    pub fn is_run(&self) -> bool {
        matches!(self, GateDecision::Run)
    }
}

/// Parses a strict-staleness allowance; anything unparsable is zero (fail closed).
pub fn max_cache_age(text: &str) -> Duration {
    humantime::parse_duration(text.trim()).unwrap_or(Duration::ZERO)
}

/// Runs every gate in order and returns the first stop, or [`GateDecision::Run`].
pub fn evaluate_gates(command: &Command, inputs: &GateInputs<'_>) -> GateDecision {
    match first_stop(command, inputs) {
        None => GateDecision::Run,
        Some(reason) => GateDecision::Stop(GateStop {
            exit_code: reason.exit_code(),
            skipped: exit_codes::is_skip(reason.exit_code()),
            reason,
        }),
    }
}

fn first_stop(command: &Command, inputs: &GateInputs<'_>) -> Option<StopReason> {
    staleness_gate(command, inputs)
        .or_else(|| version_pin_gate(command, inputs))
        .or_else(|| revoke_gate(command, inputs))
        .or_else(|| support_gate(command, inputs.host))
        .or_else(|| deadline_gate(command, inputs.fleet_now))
}

fn staleness_gate(command: &Command, inputs: &GateInputs<'_>) -> Option<StopReason> {
    let Staleness::Strict {
        max_cache_age: text,
    } = &command.staleness
    else {
        return None;
    };
    let allowed = max_cache_age(text);
    let age = inputs
        .last_fresh_at
        .map(|at| (inputs.now - at).to_std().unwrap_or(Duration::ZERO));
    match age {
        Some(age) if age <= allowed => None,
        age => Some(StopReason::Stale {
            max_cache_age: allowed,
            age,
        }),
    }
}

fn checks_kv_state(command: &Command) -> bool {
    command.staleness != Staleness::Unchecked
}

fn version_pin_gate(command: &Command, inputs: &GateInputs<'_>) -> Option<StopReason> {
    if inputs.delivery != Delivery::Broker || !checks_kv_state(command) {
        return None;
    }
    let current = inputs.script_current?;
    (current != command.version).then(|| StopReason::VersionMismatch {
        current: current.to_owned(),
        command: command.version.clone(),
    })
}

fn revoke_gate(command: &Command, inputs: &GateInputs<'_>) -> Option<StopReason> {
    let revoked = checks_kv_state(command) && inputs.script_status == Some(SCRIPT_STATUS_REVOKED);
    revoked.then_some(StopReason::Revoked)
}

fn support_gate(command: &Command, host: &HostSupport) -> Option<StopReason> {
    if !host.shells.contains(&command.shell) {
        return Some(StopReason::ShellUnsupported(command.shell));
    }
    let needs_session = matches!(command.run_as, RunAs::User | RunAs::SystemGui);
    (needs_session && !host.interactive_sessions)
        .then_some(StopReason::RunAsUnsupported(command.run_as))
}

fn deadline_gate(command: &Command, now: DateTime<Utc>) -> Option<StopReason> {
    let deadline = command.deadline_at?;
    (now > deadline).then_some(StopReason::DeadlinePassed { deadline })
}
