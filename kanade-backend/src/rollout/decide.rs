//! The rollout's decisions, as pure functions of what is known: which wave
//! each target is in, whether the error budget is breached, and what the
//! next step is. The backend's driver reads the state from SQLite, asks
//! here, and does what it is told (I/O at the edges).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::spec::{Amount, RolloutPolicy, Wave, WaveRule};

/// How one target's run ended, as the budget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Succeeded,
    /// A non-zero exit, a timeout or kill (-1), a refused script (121), or
    /// no result by the per-target deadline (the reaper's -1): counts
    /// against the budget.
    Failed,
    /// A gate skipped the run (122, 124–127): shown, not counted.
    Skipped,
}

impl Outcome {
    /// The outcome of a stored result.
    pub fn of(skipped: bool, exit_code: i64) -> Self {
        if skipped {
            Self::Skipped
        } else if exit_code == 0 {
            Self::Succeeded
        } else {
            Self::Failed
        }
    }

    /// Its name in SQLite and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// Whether `errors` of `results` (non-skipped results since the rollout
/// started or was last resumed) breach the budget: the reason, worded as
/// the execution shows it (`5 errors of 37 results > 5%`), or `None`.
/// A count budget is judged on every result; a percentage once
/// `min_sample` results are in.
pub fn breach(policy: &RolloutPolicy, errors: u64, results: u64) -> Option<String> {
    let reason = || {
        format!(
            "{errors} errors of {results} results > {}",
            budget_text(policy)
        )
    };
    match policy.max_errors? {
        Amount::Count(allowed) => (errors > allowed).then(reason),
        Amount::Percent(p) => (results >= policy.min_sample.max(1)
            && (errors as f64) * 100.0 > p * results as f64)
            .then(reason),
    }
}

fn budget_text(policy: &RolloutPolicy) -> String {
    policy
        .max_errors
        .map(|a| a.to_string())
        .unwrap_or_else(|| "no budget".into())
}

/// The wave of each target, in the order given (the driver passes targets
/// sorted by pc id, so the same target list gives the same waves). A group
/// wave takes every target not yet taken that is in its group; a percent
/// wave takes targets not yet taken, in order, until the waves so far hold
/// that share of all targets (rounded up). Targets left over go to the last
/// wave (which validation makes `percent: 100`).
pub fn assign_waves(groups_of: &[Vec<String>], waves: &[Wave]) -> Vec<usize> {
    let total = groups_of.len() as u64;
    let last = waves.len().saturating_sub(1);
    let mut wave_of: Vec<Option<usize>> = vec![None; groups_of.len()];
    let mut taken = 0u64;
    for (index, wave) in waves.iter().enumerate() {
        match &wave.rule {
            WaveRule::Group(group) => {
                for (n, groups) in groups_of.iter().enumerate() {
                    if wave_of[n].is_none() && groups.contains(group) {
                        wave_of[n] = Some(index);
                        taken += 1;
                    }
                }
            }
            WaveRule::Percent(p) => {
                let up_to = Amount::Percent(f64::from(*p)).of(total);
                for slot in wave_of.iter_mut() {
                    if taken >= up_to {
                        break;
                    }
                    if slot.is_none() {
                        *slot = Some(index);
                        taken += 1;
                    }
                }
            }
        }
    }
    wave_of.into_iter().map(|w| w.unwrap_or(last)).collect()
}

/// What the driver knows of a running rollout at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// All targets.
    pub total: u64,
    /// The current wave's index.
    pub wave: usize,
    /// Targets of the current wave not dispatched yet.
    pub pending: u64,
    /// Of those, the ones whose agent is online.
    pub pending_online: u64,
    /// Targets dispatched (or started) without a result, in every wave.
    pub in_flight: u64,
    /// Of those, in the current wave.
    pub in_flight_wave: u64,
    /// When the current wave finished (its bake started), if it did.
    pub wave_finished_at: Option<DateTime<Utc>>,
    /// Non-skipped results the budget has judged (since start or resume).
    pub judged: u64,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The driver's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Dispatch this many online pending targets of the current wave.
    Dispatch(u64),
    /// The current wave's remaining targets are all offline and nothing of
    /// it is in flight: show them `unreached` (no command is sent).
    GiveUpOffline,
    /// The current wave finished now: record the time (its bake starts).
    WaveFinished,
    /// Baking until then.
    Bake(DateTime<Utc>),
    /// Move to the next wave.
    NextWave,
    /// Every wave finished.
    Complete,
    /// Nothing to do until a result arrives (the window is full, or the
    /// wave's last targets are in flight).
    Wait,
}

/// The next step of a running rollout (pure).
pub fn next_step(policy: &RolloutPolicy, view: &View) -> Step {
    if view.pending == 0 && view.in_flight_wave == 0 {
        let Some(finished) = view.wave_finished_at else {
            return Step::WaveFinished;
        };
        if view.wave + 1 >= policy.waves.len() {
            return Step::Complete;
        }
        let bake = policy
            .waves
            .get(view.wave)
            .map_or(Duration::ZERO, |w| w.bake);
        let until = chrono::Duration::from_std(bake)
            .ok()
            .and_then(|bake| finished.checked_add_signed(bake))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        return if view.now < until {
            Step::Bake(until)
        } else {
            Step::NextWave
        };
    }
    if view.pending > 0 && view.pending_online == 0 {
        return if view.in_flight_wave == 0 {
            Step::GiveUpOffline
        } else {
            Step::Wait
        };
    }
    let room = effective_window(policy, view.total, view.judged).saturating_sub(view.in_flight);
    let n = room
        .min(policy.batch_size(view.total))
        .min(view.pending_online);
    if n > 0 {
        Step::Dispatch(n)
    } else {
        Step::Wait
    }
}

/// The window now. With a percentage budget, which cannot be judged
/// before `min_sample` results, the window starts at `min_sample` and
/// grows to twice the results judged so far (a slow start), up to the
/// configured window: a bad version reaches about the sample before the
/// halt, not a whole batch. Otherwise the configured window.
pub fn effective_window(policy: &RolloutPolicy, total: u64, judged: u64) -> u64 {
    let window = policy.window(total);
    match policy.max_errors {
        Some(Amount::Percent(_)) => window
            .min(policy.min_sample.max(1).max(judged.saturating_mul(2)))
            .max(1),
        _ => window,
    }
}

/// When a dispatched target that has not started gives its window slot
/// back: its start deadline (carried by the command, so its agent skips a
/// late copy) plus `grace` for a start event on its way.
pub fn slot_expires(
    dispatched_at: DateTime<Utc>,
    policy: &RolloutPolicy,
    grace: Duration,
) -> DateTime<Utc> {
    chrono::Duration::from_std(policy.start_within + grace)
        .ok()
        .and_then(|d| dispatched_at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
