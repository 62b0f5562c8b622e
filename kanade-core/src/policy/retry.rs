//! Bounded retry: validation and the "run another attempt?" decision.

use std::time::Duration;

use crate::wire::RetrySpec;

/// Fewest retries a policy may allow.
pub const MIN_RETRIES: u32 = 1;
/// Most retries a policy may allow.
pub const MAX_RETRIES: u32 = 10;

/// A retry policy that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// `max` is outside 1..=10.
    #[error("retry.max is {max}; it must be between {MIN_RETRIES} and {MAX_RETRIES}")]
    MaxOutOfRange {
        /// The rejected value.
        max: u32,
    },
}

/// Checks a retry policy at a write boundary (manifest upload, CLI).
pub fn validate(spec: &RetrySpec) -> Result<(), RetryError> {
    if (MIN_RETRIES..=MAX_RETRIES).contains(&spec.max) {
        Ok(())
    } else {
        Err(RetryError::MaxOutOfRange { max: spec.max })
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The process exited with this code.
    Exited(i32),
    /// The attempt hit `timeout_secs` and was terminated.
    TimedOut,
    /// An operator killed it through `kill.<exec_id>`.
    Killed,
}

impl AttemptOutcome {
    /// Whether the attempt succeeded (exit code 0).
    pub fn succeeded(self) -> bool {
        self == AttemptOutcome::Exited(0)
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Publish this attempt's result; no more attempts.
    Finish,
    /// Wait this long, then run another attempt.
    RetryAfter(Duration),
}

/// Decides whether another attempt runs after `attempts_run` attempts
/// (counting the one that just ended) finished with `outcome`.
///
/// Non-zero exits and timeouts retry while attempts remain (`1 + max` in
/// all; `max` is clamped to 10 even if an unvalidated command says more);
/// a kill never retries.
pub fn next_attempt(
    spec: Option<&RetrySpec>,
    attempts_run: u32,
    outcome: AttemptOutcome,
) -> RetryDecision {
    let Some(spec) = spec else {
        return RetryDecision::Finish;
    };
    let retryable = match outcome {
        AttemptOutcome::Exited(code) => code != 0,
        AttemptOutcome::TimedOut => true,
        AttemptOutcome::Killed => false,
    };
    let allowed_attempts = 1 + spec.max.min(MAX_RETRIES);
    if retryable && attempts_run < allowed_attempts {
        RetryDecision::RetryAfter(Duration::from_secs(spec.backoff_secs))
    } else {
        RetryDecision::Finish
    }
}
