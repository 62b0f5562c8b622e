//! Job and schedule manifests in the reference's YAML format, with
//! validation that names the field and the line of every error.

use std::collections::BTreeMap;
use std::time::Duration;

use kanade_core::names::SubjectToken;
use kanade_core::policy::script::MAX_SCRIPT_BYTES;
use kanade_core::wire::{CheckHint, EmitConfig, RunAs, Shell, Staleness};
use serde::{Deserialize, Serialize};

pub use crate::script_text::{decode_script_file, normalise_script};
pub use crate::when::When;
use crate::yaml_lines::has_key;
pub use crate::yaml_lines::line_of;

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// Dotted path of the field (`execute.timeout`), or empty for the document.
    pub field: String,
    /// 1-based line in the uploaded YAML, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.field.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.field, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.field, self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

/// Every problem found in one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ManifestErrors {
    /// The problems, in document order.
    pub errors: Vec<ManifestError>,
}

/// `execute:` of a job.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    /// Interpreter.
    pub shell: Shell,
    /// Inline script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Script file next to the manifest (resolved by the CLI before upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_file: Option<String>,
    /// `<name>/<version>` already in the `scripts` store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_object: Option<String>,
    /// Per-attempt limit (humantime).
    pub timeout: String,
    /// Identity.
    #[serde(default)]
    pub run_as: RunAs,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run without waiting for a local concurrency slot.
    #[serde(default)]
    pub bypass_local_limit: bool,
}

/// A job (stored in the `jobs` bucket by id).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Stable id (a safe token).
    pub id: String,
    /// Version; pinned in `script_current` when run.
    pub version: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What to run.
    pub execute: Execute,
    /// Staleness policy.
    #[serde(default)]
    pub staleness: Staleness,
    /// NDJSON events on stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<EmitConfig>,
    /// Health check semantics of stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckHint>,
    /// Inventory hints: the JSON stdout of a successful run becomes the
    /// pc's facts and table rows (see [`crate::inventory`]). Kept as JSON
    /// so jobs stored before the hint was typed still load; an upload is
    /// checked against [`InventoryHint`](crate::inventory::spec::InventoryHint)
    /// ([`parse_job`]), and [`Job::inventory_hint`] reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<serde_json::Value>,
    /// Needs approvals before it runs: `true`, or `{approvals, role, ttl}`.
    #[serde(default)]
    pub require_approval: crate::approval::RequireApproval,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Also run on agents that register after a fleet-wide command of this
    /// job went out (provisioning, "kitting" a new machine). By default a
    /// brand-new agent does not run commands published before it first
    /// started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kitting: bool,
}

/// Which agents a schedule or exec addresses.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Every agent.
    #[serde(default)]
    pub all: bool,
    /// These groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// These pcs.
    #[serde(default)]
    pub pcs: Vec<String>,
}

/// One rollout wave (`{group, delay}` in the reference's timed waves;
/// `{group}` or `{percent, bake}` in a self-stopping rollout).
pub type Wave = crate::rollout::spec::WaveSpec;

/// `rollout:` of a schedule: the reference's timed waves
/// (`strategy: wave`) or a self-stopping rollout (DESIGN §11).
pub type Rollout = crate::rollout::spec::RolloutSpec;

/// `retry:` under `on_failure`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// 1..=10 extra attempts.
    pub max: u32,
    /// ≥ 1 s (humantime).
    pub backoff: String,
}

/// `on_failure:` of a schedule.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnFailure {
    /// Retry policy.
    pub retry: Retry,
}

/// `active:` window.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Active {
    /// Start (RFC 3339 or `YYYY-MM-DD`).
    #[serde(default)]
    pub from: Option<String>,
    /// End.
    #[serde(default)]
    pub until: Option<String>,
}

/// `constraints:` of a schedule.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// `HH:MM-HH:MM`.
    #[serde(default)]
    pub window: Option<String>,
    /// Concurrent fires cap.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Dates not to fire (`YYYY-MM-DD`).
    #[serde(default)]
    pub skip_dates: Vec<String>,
}

/// A schedule (stored in the `schedules` bucket by id).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Stable id.
    pub id: String,
    /// The job it fires.
    pub job_id: String,
    /// When.
    pub when: When,
    /// Whom.
    #[serde(default)]
    pub target: Target,
    /// Waves.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// Random delay cap (humantime).
    #[serde(default)]
    pub jitter: Option<String>,
    /// Active window.
    #[serde(default)]
    pub active: Option<Active>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Option<Constraints>,
    /// Retry on failure.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// `local` or `utc`.
    #[serde(default)]
    pub tz: Option<String>,
    /// How late a fire may start (humantime).
    #[serde(default)]
    pub starting_deadline: Option<String>,
    /// `backend` or `agent`.
    #[serde(default)]
    pub runs_on: Option<String>,
    /// Fires at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

struct Problems<'a> {
    text: &'a str,
    errors: Vec<ManifestError>,
}

impl Problems<'_> {
    fn add(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ManifestError {
            field: path.join("."),
            line: line_of(self.text, path),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &[&str], value: &str) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.add(path, crate::wording::duration_problem(value, &e));
                None
            }
        }
    }

    fn token(
        &mut self,
        path: &[&str],
        value: &str,
        make: fn(String) -> Result<SubjectToken, kanade_core::names::InvalidToken>,
    ) {
        if let Err(e) = make(value.to_owned()) {
            self.add(path, e.to_string());
        }
    }

    fn finish<T>(self, value: T) -> Result<T, ManifestErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ManifestErrors {
                errors: self.errors,
            })
        }
    }
}

/// Refuses a manifest with a duplicate key anywhere, nested and free-form
/// fields (`when:`, `check:`) included: a YAML mapping read as a generic
/// value keeps every key and rejects a second one with its line, where a
/// typed read of a free-form field would silently keep the last.
fn refuse_duplicate_keys(text: &str) -> Result<(), ManifestErrors> {
    let Err(error) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Ok(());
    };
    let mut errors = parse_error(text, error);
    // The parser points at the mapping; point at the second occurrence of
    // the key, where the duplicate is.
    for e in &mut errors.errors {
        let Some(key) = e
            .message
            .split("duplicate entry with key \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let from = e.line.unwrap_or(1);
        if let Some(second) = text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .filter(|(_, line)| has_key(line, key))
            .map(|(index, line)| (index, line.matches(&format!("{key}:")).count()))
            .scan(0, |seen, (index, count)| {
                *seen += count;
                Some((index, *seen))
            })
            .find(|(_, seen)| *seen >= 2)
            .map(|(index, _)| index + 1)
        {
            e.line = Some(second);
        }
    }
    Err(errors)
}

fn parse_error(text: &str, error: serde_yaml_ng::Error) -> ManifestErrors {
    let line = error.location().map(|l| l.line());
    let (field, message) = crate::wording::describe_yaml_error(&error.to_string());
    let unknown = message.contains("is not a known key");
    // Point an unknown key at its own line.
    let key = field.rsplit('.').next().unwrap_or_default().to_owned();
    let line = if !unknown || key.is_empty() {
        line
    } else {
        text.lines()
            .position(|l| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{key}:"))
            })
            .map(|i| i + 1)
            .or(line)
    };
    ManifestErrors {
        errors: vec![ManifestError {
            field,
            line,
            message,
        }],
    }
}

impl Job {
    /// The `inventory:` hint, typed (`None` without one, or for a stored
    /// job whose hint predates the typed form and does not fit it).
    pub fn inventory_hint(&self) -> Option<crate::inventory::spec::InventoryHint> {
        self.inventory
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// The hints of an upload, read strictly (unknown keys and types refused
/// with their path and line).
#[derive(Deserialize)]
struct StrictHints {
    #[serde(default)]
    inventory: Option<crate::inventory::spec::InventoryHint>,
}

/// Parses and validates a job. `script_files` maps `script_file` names to
/// their contents (the CLI reads them next to the manifest).
pub fn parse_job(
    text: &str,
    script_files: &BTreeMap<String, String>,
) -> Result<Job, ManifestErrors> {
    refuse_duplicate_keys(text)?;
    let mut job: Job = serde_yaml_ng::from_str(text).map_err(|e| parse_error(text, e))?;
    let hints: StrictHints = serde_yaml_ng::from_str(text).map_err(|e| parse_error(text, e))?;
    let mut p = Problems {
        text,
        errors: Vec::new(),
    };
    p.token(&["id"], &job.id, |v| {
        SubjectToken::new(kanade_core::names::TokenKind::JobId, v)
    });
    if job.version.trim().is_empty() {
        p.add(&["version"], "must not be empty");
    }
    for (field, message) in job.require_approval.problems() {
        p.add(&["require_approval", field], message);
    }
    let sources = [
        &job.execute.script,
        &job.execute.script_file,
        &job.execute.script_object,
    ]
    .iter()
    .filter(|s| s.is_some())
    .count();
    if sources != 1 {
        p.add(
            &["execute"],
            format!(
                "exactly one of script, script_file, script_object is required; found {sources}"
            ),
        );
    }
    if let Some(name) = job.execute.script_file.clone() {
        match script_files.get(&name) {
            Some(body) => job.execute.script = Some(body.clone()),
            None => p.add(
                &["execute", "script_file"],
                format!("{name:?} was not provided with the upload"),
            ),
        }
    }
    if let Some(script) = job.execute.script.take() {
        job.execute.script = Some(normalise_script(script, job.execute.shell));
    }
    if let Some(script) = &job.execute.script {
        if script.len() > MAX_SCRIPT_BYTES {
            // Point at the line that brought the script in.
            let field = if job.execute.script_file.is_some() {
                "script_file"
            } else {
                "script"
            };
            p.add(
                &["execute", field],
                format!(
                    "script is {} bytes; at most {MAX_SCRIPT_BYTES} are allowed",
                    script.len()
                ),
            );
        }
    }
    if let Some(object) = &job.execute.script_object {
        if object.split('/').count() != 2 || object.split('/').any(str::is_empty) {
            p.add(
                &["execute", "script_object"],
                format!("{object:?} must be <name>/<version>"),
            );
        }
    }
    if let Some(timeout) = p.duration(&["execute", "timeout"], &job.execute.timeout.clone()) {
        if timeout.is_zero() {
            p.add(&["execute", "timeout"], "must be more than 0s");
        }
    }
    if let Staleness::Strict { max_cache_age } = &job.staleness {
        p.duration(&["staleness", "max_cache_age"], &max_cache_age.clone());
    }
    hint_problems(&job, hints.inventory.as_ref(), &mut p);
    p.finish(job)
}

/// The rules of the `inventory:` and `check:` hints: each needs the whole
/// stdout as JSON, so neither goes with `emit` (whose stdout is NDJSON
/// events); names are non-empty; tables and columns well formed.
fn hint_problems(
    job: &Job,
    inventory: Option<&crate::inventory::spec::InventoryHint>,
    p: &mut Problems<'_>,
) {
    if job.emit.is_some() {
        for (hint, present) in [
            ("inventory", job.inventory.is_some()),
            ("check", job.check.is_some()),
        ] {
            if present {
                p.add(
                    &[hint],
                    "cannot be combined with emit: the hint reads stdout as one JSON object, emit as NDJSON events",
                );
            }
        }
    }
    if let Some(check) = &job.check {
        // It names a subject token: alerts.<check>.<pc>.
        p.token(&["check", "name"], &check.name, |v| {
            SubjectToken::new(kanade_core::names::TokenKind::CheckName, v)
        });
        for state in check.alert.iter().flat_map(|a| &a.on) {
            if !["pass", "warn", "fail", "unknown"].contains(&state.as_str()) {
                p.add(
                    &["check", "alert", "on"],
                    format!("{state:?}: use pass, warn, fail or unknown"),
                );
            }
        }
        for (field, value) in [
            ("status_field", &check.status_field),
            ("detail_field", &check.detail_field),
        ] {
            if value.trim().is_empty() {
                p.add(&["check", field], "must not be empty");
            }
        }
    }
    if let Some(inventory) = inventory {
        for (path, message) in inventory.problems() {
            let mut full = vec!["inventory"];
            full.extend(path.iter().map(String::as_str));
            p.add(&full, message);
        }
    }
}

/// Parses and validates a schedule.
pub fn parse_schedule(text: &str) -> Result<Schedule, ManifestErrors> {
    refuse_duplicate_keys(text)?;
    let schedule: Schedule = serde_yaml_ng::from_str(text).map_err(|e| parse_error(text, e))?;
    let mut p = Problems {
        text,
        errors: Vec::new(),
    };
    if let Err(why) = crate::when::lower(&schedule.when) {
        p.add(&["when"], why.to_string());
    }
    if let Some(active) = &schedule.active {
        if let (Some(from), Some(until)) = (&active.from, &active.until) {
            if from >= until {
                p.add(
                    &["active", "until"],
                    format!("{until:?} is not after from {from:?}"),
                );
            }
        }
    }
    p.token(&["id"], &schedule.id, |v| {
        SubjectToken::new(kanade_core::names::TokenKind::ScheduleId, v)
    });
    p.token(&["job_id"], &schedule.job_id, |v| {
        SubjectToken::new(kanade_core::names::TokenKind::JobId, v)
    });
    for group in &schedule.target.groups {
        p.token(&["target", "groups"], group, SubjectToken::group);
    }
    for pc in &schedule.target.pcs {
        p.token(&["target", "pcs"], pc, SubjectToken::pc);
    }
    if !schedule.target.all && schedule.target.groups.is_empty() && schedule.target.pcs.is_empty() {
        p.add(
            &["target"],
            "names no agents: add `target:` with `all: true`, `groups: [...]` or `pcs: [...]`",
        );
    }
    if let Some(jitter) = &schedule.jitter {
        p.duration(&["jitter"], jitter);
    }
    let deadline = schedule
        .starting_deadline
        .as_ref()
        .and_then(|d| p.duration(&["starting_deadline"], d));
    if let Some(rollout) = &schedule.rollout {
        if let Err(problems) = rollout.validate() {
            for problem in problems {
                p.add(&["rollout", problem.field], problem.message);
            }
        }
        if rollout.is_timed_waves() {
            for wave in &rollout.waves {
                let delay = wave
                    .delay
                    .as_deref()
                    .and_then(|d| humantime::parse_duration(d).ok());
                if let (Some(delay), Some(deadline)) = (delay, deadline) {
                    if delay > deadline {
                        p.add(
                            &["rollout", "waves"],
                            format!(
                                "wave {} waits longer than starting_deadline",
                                wave.group.as_deref().unwrap_or("")
                            ),
                        );
                    }
                }
            }
        }
    }
    if let Some(on_failure) = &schedule.on_failure {
        if !(1..=10).contains(&on_failure.retry.max) {
            p.add(
                &["on_failure", "retry", "max"],
                format!("is {}; it must be between 1 and 10", on_failure.retry.max),
            );
        }
        if let Some(backoff) = p.duration(
            &["on_failure", "retry", "backoff"],
            &on_failure.retry.backoff.clone(),
        ) {
            if backoff < Duration::from_secs(1) {
                p.add(&["on_failure", "retry", "backoff"], "must be at least 1s");
            }
        }
    }
    if let Some(tz) = &schedule.tz {
        if tz != "local" && tz != "utc" {
            p.add(&["tz"], format!("{tz:?} is not local or utc"));
        }
    }
    if let Some(runs_on) = &schedule.runs_on {
        if runs_on != "backend" && runs_on != "agent" {
            p.add(&["runs_on"], format!("{runs_on:?} is not backend or agent"));
        }
    }
    if let Some(window) = schedule
        .constraints
        .as_ref()
        .and_then(|c| c.window.as_ref())
    {
        let ok = window.split_once('-').is_some_and(|(a, b)| {
            chrono::NaiveTime::parse_from_str(a, "%H:%M").is_ok()
                && chrono::NaiveTime::parse_from_str(b, "%H:%M").is_ok()
        });
        if !ok {
            p.add(
                &["constraints", "window"],
                format!("{window:?} is not HH:MM-HH:MM"),
            );
        }
    }
    p.finish(schedule)
}
