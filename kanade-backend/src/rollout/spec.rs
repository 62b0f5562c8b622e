//! The `rollout:` policy as operators write it (exec body, `kanade exec`
//! flags, schedule YAML), and its validation into a [`RolloutPolicy`].
//!
//! Two forms share the key (DESIGN §11):
//! - the reference's timed waves, `{strategy: wave, waves: [{group, delay}]}`,
//!   which keep meaning what they mean in kanade 0.101 (each group fired
//!   after its delay; nothing halts them);
//! - the self-stopping rollout, without `strategy`: `batch`,
//!   `max_concurrency`, `waves` of `{group}` or `{percent, bake}`,
//!   `max_errors`, `min_sample`, `on_halt`, `start_within`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use kanade_core::names::SubjectToken;

/// A count (`10`) or a percentage of the targets (`"10%"`).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AmountSpec {
    /// A number of targets.
    Count(u64),
    /// `"N%"` (a bare number in quotes is a count).
    Text(String),
}

/// One wave as written.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    /// Every target in this group (a canary cohort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Up to this share of all targets, counted from the first wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// How long to wait after this wave finished before the next starts
    /// (humantime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// The reference's form only (`strategy: wave`): delay after the first
    /// wave (humantime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

/// `rollout:` as written.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `wave`: the reference's timed waves. Absent: a self-stopping rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Targets dispatched per step (default: all of the wave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<AmountSpec>,
    /// Targets in flight at most (default: the batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    /// Ordered cohorts; each waits for the previous one to finish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveSpec>,
    /// The error budget of the whole rollout (default: none, never halts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<AmountSpec>,
    /// Results needed before a percentage budget is judged (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample: Option<u64>,
    /// What a halt also does: `revoke` (the job version), `kill` (copies
    /// still running).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_halt: Vec<String>,
    /// How long a dispatched target has to start before its window slot is
    /// given back and it is shown `unreached` (humantime, default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_within: Option<String>,
}

/// A count or a share, resolved against a number of targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// This many.
    Count(u64),
    /// This percentage (0–100].
    Percent(f64),
}

impl Amount {
    /// The share of `total` this amount stands for, rounded up (a
    /// percentage of a non-empty target is at least one).
    pub fn of(self, total: u64) -> u64 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => ((total as f64) * p / 100.0).ceil() as u64,
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Which targets a wave takes.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveRule {
    /// Every target (not taken by an earlier wave) in this group.
    Group(String),
    /// Targets up to this cumulative percentage of all targets.
    Percent(u32),
}

/// One resolved wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    /// Its targets.
    pub rule: WaveRule,
    /// The wait after it finished.
    pub bake: Duration,
}

/// A validated self-stopping rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// Targets dispatched per step.
    pub batch: Amount,
    /// Targets in flight at most (`None`: the batch).
    pub max_concurrency: Option<u64>,
    /// At least one; the last takes every target left.
    pub waves: Vec<Wave>,
    /// The budget (`None`: never halts on errors).
    pub max_errors: Option<Amount>,
    /// Results before a percentage budget is judged.
    pub min_sample: u64,
    /// Revoke the job version on halt.
    pub revoke_on_halt: bool,
    /// Kill running copies on halt.
    pub kill_on_halt: bool,
    /// Start deadline of a dispatched target.
    pub start_within: Duration,
}

/// The default of `min_sample`.
pub const DEFAULT_MIN_SAMPLE: u64 = 10;
/// The default of `start_within`.
pub const DEFAULT_START_WITHIN: Duration = Duration::from_secs(300);

/// One thing wrong with a `rollout:`: the field under `rollout` and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutProblem {
    /// `batch`, `waves`, `max_errors`, …
    pub field: &'static str,
    /// The sentence.
    pub message: String,
}

impl std::fmt::Display for RolloutProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rollout.{}: {}", self.field, self.message)
    }
}

/// Parses `"10%"`, `"10"` or `10`: `None` and a sentence if it is neither.
fn amount(spec: &AmountSpec) -> Result<Amount, String> {
    match spec {
        AmountSpec::Count(n) => Ok(Amount::Count(*n)),
        AmountSpec::Text(text) => {
            let text = text.trim();
            if let Some(number) = text.strip_suffix('%') {
                match number.trim().parse::<f64>() {
                    Ok(p) if p.is_finite() => Ok(Amount::Percent(p)),
                    _ => Err(format!("{text:?} is not a percentage like 10%")),
                }
            } else {
                text.parse::<u64>()
                    .map(Amount::Count)
                    .map_err(|_| format!("{text:?} is neither a count nor a percentage like 10%"))
            }
        }
    }
}

/// The longest `bake` or `start_within` accepted: 30 days.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    if d > MAX_WAIT {
        return Err(format!("{text:?} is longer than 30 days"));
    }
    Ok(d)
}

impl RolloutSpec {
    /// Whether this is the reference's timed-waves form.
    pub fn is_timed_waves(&self) -> bool {
        self.strategy.is_some()
    }

    /// Checks the spec. The reference's form gives `Ok(None)`; the
    /// self-stopping form its [`RolloutPolicy`]; every problem found is
    /// listed (field and sentence).
    pub fn validate(&self) -> Result<Option<RolloutPolicy>, Vec<RolloutProblem>> {
        let mut problems = Vec::new();
        let mut add =
            |field: &'static str, message: String| problems.push(RolloutProblem { field, message });
        if let Some(strategy) = &self.strategy {
            if strategy != "wave" {
                add(
                    "strategy",
                    format!("{strategy:?} is not a strategy: use wave (the reference's timed waves), or leave strategy out for batch and max_errors"),
                );
            }
            let new_fields = self.batch.is_some()
                || self.max_concurrency.is_some()
                || self.max_errors.is_some()
                || self.min_sample.is_some()
                || !self.on_halt.is_empty()
                || self.start_within.is_some();
            if new_fields {
                add("strategy", "strategy: wave is the reference's timed waves and takes only waves of {group, delay}; leave strategy out to use batch, max_concurrency, max_errors, min_sample, on_halt or start_within".into());
            }
            for (n, wave) in self.waves.iter().enumerate() {
                match &wave.group {
                    Some(group) => {
                        if let Err(e) = SubjectToken::group(group.clone()) {
                            add("waves", format!("wave {}: {e}", n + 1));
                        }
                    }
                    None => add("waves", format!("wave {} names no group", n + 1)),
                }
                if wave.percent.is_some() || wave.bake.is_some() {
                    add(
                        "waves",
                        format!(
                            "wave {}: percent and bake need a rollout without strategy: wave",
                            n + 1
                        ),
                    );
                }
                if let Some(Err(e)) = wave.delay.as_deref().map(duration) {
                    add("waves", format!("wave {}: delay {e}", n + 1));
                }
            }
            return if problems.is_empty() {
                Ok(None)
            } else {
                Err(problems)
            };
        }
        let batch = match self.batch.as_ref().map(amount) {
            None => Amount::Percent(100.0),
            Some(Ok(Amount::Count(0))) => {
                add(
                    "batch",
                    "is 0, which dispatches nothing: use 1 or more".into(),
                );
                Amount::Count(1)
            }
            Some(Ok(Amount::Percent(p))) if !(p > 0.0 && p <= 100.0) => {
                add(
                    "batch",
                    format!(
                        "{p}% is not a share of the targets: use more than 0% and at most 100%"
                    ),
                );
                Amount::Percent(100.0)
            }
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                add("batch", e);
                Amount::Percent(100.0)
            }
        };
        if self.max_concurrency == Some(0) {
            add(
                "max_concurrency",
                "is 0, so nothing could ever be in flight: use 1 or more".into(),
            );
        }
        let max_errors = match self.max_errors.as_ref().map(amount) {
            None => None,
            Some(Ok(Amount::Percent(p))) if !(0.0..=100.0).contains(&p) => {
                add(
                    "max_errors",
                    format!("{p}% is not a share of the results: use 0% to 100%"),
                );
                None
            }
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                add("max_errors", e);
                None
            }
        };
        let mut waves = Vec::new();
        let mut reached = 0;
        for (n, wave) in self.waves.iter().enumerate() {
            let rule = match (&wave.group, wave.percent) {
                (Some(group), None) => {
                    if let Err(e) = SubjectToken::group(group.clone()) {
                        add("waves", format!("wave {}: {e}", n + 1));
                    }
                    WaveRule::Group(group.clone())
                }
                (None, Some(p)) => {
                    if p == 0 || p > 100 {
                        add(
                            "waves",
                            format!("wave {}: percent {p} is not between 1 and 100", n + 1),
                        );
                    } else if p < reached {
                        add("waves", format!("wave {}: percent {p} is below the {reached} an earlier wave reached (percentages count from the first wave)", n + 1));
                    }
                    reached = reached.max(p);
                    WaveRule::Percent(p)
                }
                _ => {
                    add(
                        "waves",
                        format!("wave {} needs exactly one of group or percent", n + 1),
                    );
                    WaveRule::Percent(100)
                }
            };
            if wave.delay.is_some() {
                add("waves", format!("wave {}: delay belongs to strategy: wave (timed waves); a self-stopping rollout waits with bake after a wave finishes", n + 1));
            }
            let bake = match wave.bake.as_deref().map(duration) {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    add("waves", format!("wave {}: bake {e}", n + 1));
                    Duration::ZERO
                }
                None => Duration::ZERO,
            };
            waves.push(Wave { rule, bake });
        }
        if waves.is_empty() {
            waves.push(Wave {
                rule: WaveRule::Percent(100),
                bake: Duration::ZERO,
            });
        } else if waves.last().map(|w| &w.rule) != Some(&WaveRule::Percent(100)) {
            add(
                "waves",
                "do not cover the target: end with { percent: 100 } so every target has a wave"
                    .into(),
            );
        }
        let mut revoke_on_halt = false;
        let mut kill_on_halt = false;
        for action in &self.on_halt {
            match action.as_str() {
                "revoke" => revoke_on_halt = true,
                "kill" => kill_on_halt = true,
                other => add(
                    "on_halt",
                    format!("{other:?} is not an action: use revoke, kill or both"),
                ),
            }
        }
        let start_within = match self.start_within.as_deref().map(duration) {
            Some(Ok(d)) if d < Duration::from_secs(1) => {
                add("start_within", "must be at least 1s".into());
                d
            }
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                add("start_within", e);
                DEFAULT_START_WITHIN
            }
            None => DEFAULT_START_WITHIN,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Some(RolloutPolicy {
            batch,
            max_concurrency: self.max_concurrency,
            waves,
            max_errors,
            min_sample: self.min_sample.unwrap_or(DEFAULT_MIN_SAMPLE),
            revoke_on_halt,
            kill_on_halt,
            start_within,
        }))
    }
}

impl RolloutSpec {
    /// The policy of a self-stopping rollout for an exec: the reference's
    /// timed waves (which only schedules have) and invalid specs are
    /// refused, every problem named in one sentence.
    pub fn exec_policy(&self) -> Result<RolloutPolicy, String> {
        match self.validate() {
            Ok(Some(policy)) => Ok(policy),
            Ok(None) => Err("rollout.strategy: wave is the reference's timed waves, which schedules have; an exec takes batch, max_concurrency, waves of {group} or {percent, bake}, max_errors, min_sample and on_halt".into()),
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }
}

impl RolloutPolicy {
    /// The window: targets in flight at most, for `total` targets.
    pub fn window(&self, total: u64) -> u64 {
        let batch = self.batch_size(total);
        self.max_concurrency.unwrap_or(batch).max(1)
    }

    /// Targets dispatched per step, for `total` targets (at least one).
    pub fn batch_size(&self, total: u64) -> u64 {
        self.batch.of(total).max(1)
    }
}
