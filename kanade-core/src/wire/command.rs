//! The [`Command`] a backend publishes and an agent runs.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One script execution request, as it travels on `commands.*` subjects.
///
/// Field names and serde shapes follow the published kanade wire format:
/// `exec_id` and `jitter_secs` are always written (as `null` when unset),
/// while the later additions (`script_object`, `cwd`, `deadline_at`, `emit`,
/// `check`, `retry`) are left out when unset so older agents never see them.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Job (manifest) id this command was built from.
    pub id: String,
    /// Job version; compared against `script_current[id]` by the version-pin gate.
    pub version: String,
    /// Unique id of this request; an agent runs a request id at most once.
    pub request_id: String,
    /// Execution (deployment, wave or schedule fire) this command belongs to.
    /// Older publishers call it `job_id`; both names decode.
    #[serde(default, alias = "job_id")]
    pub exec_id: Option<String>,
    /// Interpreter that runs the script.
    pub shell: Shell,
    /// Inline script body; empty when `script_object` carries the body instead.
    #[serde(default)]
    pub script: String,
    /// `<name>/<version>` key into the `scripts` object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_object: Option<String>,
    /// Hex sha256 of the object-store body, fixed when the command was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_object_sha256: Option<String>,
    /// Wall-clock limit for one attempt, in seconds.
    pub timeout_secs: u64,
    /// Upper bound of the uniform random delay before starting, in seconds.
    #[serde(default)]
    pub jitter_secs: Option<u64>,
    /// Identity and session the child process runs under.
    #[serde(default)]
    pub run_as: RunAs,
    /// Working directory of the child; `None` inherits the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Start deadline: an agent that has not started the command by then skips it (125).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(with = "super::timestamp::optional")]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub deadline_at: Option<DateTime<Utc>>,
    /// How fresh the agent's view of `script_current` / `script_status` must be.
    #[serde(default)]
    pub staleness: Staleness,
    /// Parse stdout as NDJSON observability events when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<EmitConfig>,
    /// Treat stdout as a health check object when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckHint>,
    /// Bounded retry on failure; `None` runs exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// The backend's clock when it published the command (a kanade
    /// addition; reference agents ignore it). Agents compare it with their
    /// own clock on live delivery to estimate their offset, so a skewed
    /// agent clock does not decide `deadline_at`
    /// ([`policy::clock`](crate::policy::clock)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(with = "super::timestamp::optional")]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub issued_at: Option<DateTime<Utc>>,
    /// Run it on agents that registered after it was published, too (a
    /// kanade addition; without it a brand-new agent replaying EXEC skips
    /// commands older than itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kitting: bool,
}

/// Fixed-backoff retry policy carried by a [`Command`].
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySpec {
    /// Additional attempts allowed after the first failure (1..=10).
    pub max: u32,
    /// Seconds to wait between attempts.
    #[serde(default)]
    pub backoff_secs: u64,
}

/// Script interpreter.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    /// Windows PowerShell (`powershell.exe`).
    Powershell,
    /// Windows `cmd.exe`.
    Cmd,
    /// POSIX `sh`.
    Sh,
    /// PowerShell 7+ (`pwsh`).
    Pwsh,
    /// GNU bash (a kanade addition; the published reference has no `bash`).
    Bash,
}

impl Shell {
    /// Every shell, in wire order.
    pub const ALL: [Shell; 5] = [
        Shell::Powershell,
        Shell::Cmd,
        Shell::Sh,
        Shell::Pwsh,
        Shell::Bash,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Powershell => "powershell",
            Shell::Cmd => "cmd",
            Shell::Sh => "sh",
            Shell::Pwsh => "pwsh",
            Shell::Bash => "bash",
        }
    }
}

/// Identity and session a child process is launched under.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunAs {
    /// The agent's own (service) identity, no interactive session. The default.
    #[default]
    System,
    /// The logged-in console user, in their session.
    User,
    /// The agent's identity inside the user's interactive session.
    SystemGui,
}

/// Staleness policy: how the agent treats its cached KV state at fire time.
///
/// Decoding fails closed: a `strict` policy without a readable
/// `max_cache_age`, an unknown `mode` or any other shape decodes as
/// `Strict` with an empty age (treated as zero), so the agent skips the
/// command with exit 127 instead of dropping it or running it unchecked.
#[derive(Serialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Staleness {
    /// Use whatever state is cached. The default.
    #[default]
    Cached,
    /// Run only if the agent was connected within `max_cache_age`.
    Strict {
        /// Humantime duration such as `"5m"`; an unparsable value counts as zero.
        max_cache_age: String,
    },
    /// Skip the version-pin and revoke gates entirely.
    Unchecked,
}

impl<'de> Deserialize<'de> for Staleness {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let fail_closed = || Staleness::Strict {
            max_cache_age: String::new(),
        };
        Ok(
            match value.get("mode").and_then(serde_json::Value::as_str) {
                Some("cached") => Staleness::Cached,
                Some("unchecked") => Staleness::Unchecked,
                Some("strict") => match value
                    .get("max_cache_age")
                    .and_then(serde_json::Value::as_str)
                {
                    Some(age) => Staleness::Strict {
                        max_cache_age: age.to_owned(),
                    },
                    None => fail_closed(),
                },
                _ if value.is_null() => Staleness::Cached,
                _ => fail_closed(),
            },
        )
    }
}

/// What to do with a script's stdout besides returning it.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitConfig {
    /// The kind of records stdout carries.
    #[serde(rename = "type")]
    pub kind: EmitKind,
}

/// Kinds of records a script may emit on stdout.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EmitKind {
    /// NDJSON [`ObsEvent`](super::ObsEvent) lines, published on `obs.<pc>`.
    Events,
}

/// Marks a job's stdout as a health check result object.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct CheckHint {
    /// Stable check id (a slug such as `disk_space`).
    pub name: String,
    /// Human-facing title; falls back to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Stdout field holding `ok` / `warn` / `fail` / `unknown`.
    #[serde(default = "default_status_field")]
    pub status_field: String,
    /// Stdout field holding a one-line summary.
    #[serde(default = "default_detail_field")]
    pub detail_field: String,
    /// Job id that remediates a failing check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub troubleshoot: Option<String>,
    /// Project the check into the fleet-wide compliance view.
    #[serde(default = "default_true")]
    pub fleet: bool,
    /// Show the check on the end-user health view.
    #[serde(default = "default_true")]
    pub health: bool,
    /// Which states raise an alert when a pc enters them (default: `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<CheckAlert>,
}

/// `check.alert`: the states whose arrival is published on
/// `alerts.<check>.<pc>` (and sent to the backend's webhook).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckAlert {
    /// `fail`, `warn`, `unknown` (`pass` too, for recoveries).
    #[serde(default)]
    pub on: Vec<String>,
}

impl CheckHint {
    /// Whether a pc entering `status` raises an alert: the configured
    /// states, or `fail` when none are.
    pub fn alerts_on(&self, status: &str) -> bool {
        match &self.alert {
            Some(alert) if !alert.on.is_empty() => alert.on.iter().any(|s| s == status),
            _ => status == "fail",
        }
    }
}

impl CheckHint {
    /// A check hint with the default field names.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            label: None,
            status_field: default_status_field(),
            detail_field: default_detail_field(),
            troubleshoot: None,
            fleet: true,
            health: true,
            alert: None,
        }
    }
}

fn default_status_field() -> String {
    "status".to_owned()
}

fn default_detail_field() -> String {
    "detail".to_owned()
}

fn default_true() -> bool {
    true
}
