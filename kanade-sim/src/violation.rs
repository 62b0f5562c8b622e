//! [`Violation`]: one way a simulation broke a property, with what the
//! check saw. Prints as one readable line.

use std::time::Duration;

use humantime::format_duration;

/// One property a simulation broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A forged command (unsigned or signed by a key outside the ring) ran
    /// on an enforcing agent.
    #[error("forged command {request_id} ran on {pc}")]
    ForgedRan {
        /// The agent.
        pc: String,
        /// The forged request.
        request_id: String,
    },
    /// A stored result has more attempts than the job's `1 + max`.
    #[error("{exec_id} on {pc}: {attempts} attempts, more than 1 + max")]
    TooManyAttempts {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
        /// Attempts in the stored result.
        attempts: i64,
    },
    /// The only result of an agent came from the reaper.
    #[error("{exec_id} on {pc}: only the reaper's result, the agent never reported")]
    OnlyReaped {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
    },
    /// An agent has no result, and no outage excuses it.
    #[error(
        "{exec_id} ({job_id}) on {pc}: no result (fired at {}, {})",
        time(.fired_at),
        superseded(.superseded_at)
    )]
    NoResult {
        /// The execution.
        exec_id: String,
        /// Its job.
        job_id: String,
        /// The agent.
        pc: String,
        /// Simulated time the command went out.
        fired_at: Duration,
        /// Simulated time a newer command replaced it, if one did.
        superseded_at: Option<Duration>,
    },
    /// An agent has more than one result.
    #[error("{exec_id} on {pc}: {count} results")]
    SeveralResults {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
        /// How many.
        count: usize,
    },
    /// A job that must be skipped (late, revoked) ran or was not skipped
    /// with its code.
    #[error(
        "{exec_id} ({job_id}) on {pc}: exit {exit_code} skipped {skipped} after {runs} runs, expected a skip with {expected} and no run"
    )]
    NotSkipped {
        /// The execution.
        exec_id: String,
        /// Its job.
        job_id: String,
        /// The agent.
        pc: String,
        /// The stored exit code.
        exit_code: i64,
        /// Whether the stored result is a skip.
        skipped: bool,
        /// Runs of the request on the agent.
        runs: usize,
        /// The skip code expected.
        expected: i64,
    },
    /// A job revoked in its jitter was skipped with another code than 126.
    #[error("{exec_id} on {pc}: skipped with {exit_code}, expected 126")]
    WrongSkipCode {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
        /// The stored exit code.
        exit_code: i64,
    },
    /// A job revoked in its jitter ran after the revoke.
    #[error(
        "{exec_id} on {pc}: ran at {} although revoked at {} during its jitter",
        time(.ran_at),
        time(.revoked_at)
    )]
    RanAfterRevoke {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
        /// Simulated time the run started.
        ran_at: Duration,
        /// Simulated time the revoke went through.
        revoked_at: Duration,
    },
    /// An execution's counters differ from its stored results.
    #[error(
        "{exec_id}: counters (succeeded, failed, skipped, started) {stored:?}, stored results say {expected:?}"
    )]
    Counters {
        /// The execution.
        exec_id: String,
        /// Stored (succeeded, failed, skipped, started).
        stored: (i64, i64, i64, i64),
        /// The same, counted from the stored results.
        expected: (i64, i64, i64, i64),
    },
    /// The backend's simulated database rolled transactions back while it
    /// had no journal ([`DbDurability::Simulated`]), so each may have left
    /// part of its writes behind: every other check reads that database.
    ///
    /// [`DbDurability::Simulated`]: kanade_backend::db::DbDurability::Simulated
    #[error("the simulated database rolled back {count} transaction(s) without a journal")]
    UnjournaledRollback {
        /// How many.
        count: u64,
    },
    /// An execution's status does not fit how many results it has.
    #[error("{exec_id}: status {status} with {reported} of {targeted} results")]
    Status {
        /// The execution.
        exec_id: String,
        /// Its stored status.
        status: String,
        /// Results stored.
        reported: i64,
        /// Agents targeted.
        targeted: i64,
    },
    /// A request ran more than once from its first attempt on one agent.
    #[error("request {request_id} ran {runs} times on {pc}")]
    RanTwice {
        /// The request.
        request_id: String,
        /// The agent.
        pc: String,
        /// First attempts run.
        runs: usize,
    },
    /// A run's attempt number is out of order or beyond `1 + max`.
    #[error(
        "request {request_id} on {pc}: run {run} is attempt {attempt} (max {retries} retries)"
    )]
    AttemptOutOfOrder {
        /// The request.
        request_id: String,
        /// The agent.
        pc: String,
        /// Which run (from 1).
        run: usize,
        /// Its attempt number.
        attempt: u32,
        /// Retries the job allows.
        retries: u32,
    },
    /// A run of a killed execution started after the kill was acknowledged.
    #[error(
        "{exec_id} on {pc}: a run started at {} after the kill at {}",
        time(.started),
        time(.killed_at)
    )]
    StartedAfterKill {
        /// The execution.
        exec_id: String,
        /// The agent.
        pc: String,
        /// Simulated time the run started.
        started: Duration,
        /// Simulated time the kill went through.
        killed_at: Duration,
    },
    /// An attempt started after the previous one was killed.
    #[error("request {request_id} on {pc}: attempt {attempt} followed a kill")]
    AfterKill {
        /// The request.
        request_id: String,
        /// The agent.
        pc: String,
        /// The attempt.
        attempt: u32,
    },
    /// More of a rollout's runs overlapped than its window allows.
    #[error("rollout {exec_id}: {most} runs at once, window {window}")]
    WindowOverfilled {
        /// The execution.
        exec_id: String,
        /// The most runs that overlapped.
        most: usize,
        /// Its window.
        window: u64,
    },
    /// A target was dispatched after its rollout halted.
    #[error(
        "rollout {exec_id}: {pc} dispatched at {dispatched_at}, after the halt at {halted_at}"
    )]
    DispatchedAfterHalt {
        /// The execution.
        exec_id: String,
        /// The target.
        pc: String,
        /// When it went out.
        dispatched_at: String,
        /// When the rollout halted.
        halted_at: String,
    },
    /// A rollout halted without a breach, or later than the result that
    /// breached its budget, or counted more results after the halt than
    /// were in flight.
    #[error("rollout {exec_id}: halt {reason:?} {why}")]
    BadHalt {
        /// The execution.
        exec_id: String,
        /// The reason it recorded.
        reason: String,
        /// What is wrong with it.
        why: String,
    },
    /// A rollout neither completed nor halted by the end.
    #[error("rollout {exec_id}: still {state} at the end")]
    RolloutUnfinished {
        /// The execution.
        exec_id: String,
        /// Its state.
        state: String,
    },
    /// A target of a rollout neither answered once nor was excused
    /// (offline at its turn, a halt).
    #[error("rollout {exec_id}: {pc} is {phase} with {results} results")]
    RolloutTarget {
        /// The execution.
        exec_id: String,
        /// The target.
        pc: String,
        /// Its phase.
        phase: String,
        /// Its stored results.
        results: usize,
    },
}

fn time(at: &Duration) -> humantime::FormattedDuration {
    format_duration(*at)
}

fn superseded(at: &Option<Duration>) -> String {
    match at {
        Some(at) => format!("superseded at {}", format_duration(*at)),
        None => "never superseded".into(),
    }
}
