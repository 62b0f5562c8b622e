//! Rollouts from the CLI (DESIGN §11): `kanade exec`'s rollout flags,
//! `kanade rollout status | pause | resume | abort EXEC`, and the progress
//! bars per wave `kanade exec` draws while a rollout runs.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kanade_backend::rollout::spec::{AmountSpec, RolloutSpec, WaveSpec};
use kanade_backend::RolloutStatus;

use crate::api::Api;
use crate::print;

/// `kanade exec`'s rollout flags; any of them makes the exec a rollout.
#[derive(Debug, Clone, Default, Args)]
pub struct RolloutArgs {
    /// Targets dispatched per step: a count (3) or a share (10%).
    #[arg(long)]
    pub batch: Option<String>,
    /// Targets in flight at most (default: the batch).
    #[arg(long)]
    pub max_concurrency: Option<u64>,
    /// The error budget: a count (1) or a share of results (5%); past it
    /// the rollout halts.
    #[arg(long)]
    pub max_errors: Option<String>,
    /// Results needed before a percentage budget is judged (default 10).
    #[arg(long)]
    pub min_sample: Option<u64>,
    /// A group that goes first, as its own wave.
    #[arg(long)]
    pub canary_group: Option<String>,
    /// Wait after the canary wave finished (humantime: 10m).
    #[arg(long, requires = "canary_group")]
    pub bake: Option<String>,
    /// On halt also: revoke (the job version), kill (running copies).
    #[arg(long, value_delimiter = ',')]
    pub on_halt: Vec<String>,
    /// How long a dispatched target has to start (default 5m).
    #[arg(long)]
    pub start_within: Option<String>,
}

fn amount(text: &str) -> AmountSpec {
    text.parse::<u64>()
        .map(AmountSpec::Count)
        .unwrap_or_else(|_| AmountSpec::Text(text.to_owned()))
}

impl RolloutArgs {
    /// The rollout the flags describe (`None`: no flag given, a plain
    /// exec). The backend validates it.
    pub fn spec(&self) -> Option<RolloutSpec> {
        let any = self.batch.is_some()
            || self.max_concurrency.is_some()
            || self.max_errors.is_some()
            || self.min_sample.is_some()
            || self.canary_group.is_some()
            || !self.on_halt.is_empty()
            || self.start_within.is_some();
        if !any {
            return None;
        }
        let waves = match &self.canary_group {
            Some(group) => vec![
                WaveSpec {
                    group: Some(group.clone()),
                    bake: self.bake.clone(),
                    ..WaveSpec::default()
                },
                WaveSpec {
                    percent: Some(100),
                    ..WaveSpec::default()
                },
            ],
            None => Vec::new(),
        };
        Some(RolloutSpec {
            batch: self.batch.as_deref().map(amount),
            max_concurrency: self.max_concurrency,
            waves,
            max_errors: self.max_errors.as_deref().map(amount),
            min_sample: self.min_sample,
            on_halt: self.on_halt.clone(),
            start_within: self.start_within.clone(),
            ..RolloutSpec::default()
        })
    }
}

/// `kanade rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Waves, window, budget and each wave's dispatched / in flight /
    /// succeeded / failed / skipped / pending / unreached targets.
    Status {
        /// Execution id.
        exec: String,
    },
    /// Dispatch nothing more until resumed (runs in flight finish).
    Pause {
        /// Execution id.
        exec: String,
    },
    /// Go on with the targets not yet done, with a fresh budget (and the
    /// job's new version, if it has one since).
    Resume {
        /// Execution id.
        exec: String,
    },
    /// Stop for good (runs in flight finish; `kanade kill` stops them).
    Abort {
        /// Execution id.
        exec: String,
    },
}

/// Runs a `kanade rollout` command.
pub fn run(api: &Api, json: bool, action: RolloutCmd) -> Result<ExitCode, String> {
    let status: RolloutStatus = match &action {
        RolloutCmd::Status { exec } => api.get(&format!("/api/executions/{exec}/rollout"))?,
        RolloutCmd::Pause { exec } => post(api, exec, "pause")?,
        RolloutCmd::Resume { exec } => post(api, exec, "resume")?,
        RolloutCmd::Abort { exec } => post(api, exec, "abort")?,
    };
    print(json, &status, || describe(&status))?;
    Ok(ExitCode::SUCCESS)
}

fn post(api: &Api, exec: &str, what: &str) -> Result<RolloutStatus, String> {
    api.post(
        &format!("/api/executions/{exec}/rollout/{what}"),
        &serde_json::json!({}),
    )
}

/// The status as text: state (and why), window, budget, then a line per
/// wave.
pub fn describe(status: &RolloutStatus) {
    let r = &status.rollout;
    let why = r
        .reason
        .as_deref()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    println!(
        "rollout of execution {}: {}{why}; wave {} of {}",
        r.exec_id,
        r.state,
        r.wave + 1,
        status.waves.len()
    );
    let budget = status
        .max_errors
        .as_deref()
        .map(|b| {
            let sample = if b.ends_with('%') {
                format!(", judged from {} results", status.min_sample)
            } else {
                String::new()
            };
            format!(
                "{} errors of {} results (budget {b}{sample})",
                r.budget_errors, r.budget_results
            )
        })
        .unwrap_or_else(|| "no error budget".into());
    println!("batch {}, window {}; {budget}", status.batch, status.window);
    println!(
        "{:<4} {:<18} {:>7} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "WAVE",
        "RULE",
        "TARGETS",
        "IN FLIGHT",
        "SUCCEEDED",
        "FAILED",
        "SKIPPED",
        "PENDING",
        "UNREACHED"
    );
    for (n, wave) in status.waves.iter().enumerate() {
        let c = &wave.counts;
        let bake = if wave.bake_secs > 0 {
            format!(" +{}s", wave.bake_secs)
        } else {
            String::new()
        };
        println!(
            "{:<4} {:<18} {:>7} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9}",
            n + 1,
            format!("{}{bake}", wave.rule),
            c.targets,
            c.in_flight,
            c.succeeded,
            c.failed,
            c.skipped,
            c.pending,
            c.unreached
        );
    }
}

/// Progress bars, one per wave, while `kanade exec` waits on a rollout.
pub struct WaveBars {
    bars: Vec<indicatif::ProgressBar>,
    _multi: indicatif::MultiProgress,
}

impl WaveBars {
    /// Bars for `status`'s waves.
    pub fn new(status: &RolloutStatus) -> Self {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(
            "wave {prefix:<20} [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bars = status
            .waves
            .iter()
            .map(|wave| {
                let bar = multi.add(indicatif::ProgressBar::new(
                    wave.counts.targets.max(0) as u64
                ));
                bar.set_style(style.clone());
                bar.set_prefix(wave.rule.clone());
                bar
            })
            .collect();
        Self {
            bars,
            _multi: multi,
        }
    }

    /// Moves the bars to `status`.
    pub fn update(&self, status: &RolloutStatus) {
        for (bar, wave) in self.bars.iter().zip(&status.waves) {
            let c = &wave.counts;
            bar.set_position((c.succeeded + c.failed + c.skipped + c.unreached).max(0) as u64);
            bar.set_message(format!(
                "{} in flight, {} failed — {}",
                c.in_flight, c.failed, status.rollout.state
            ));
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
    }
}
