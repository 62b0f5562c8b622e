//! The [`ExecResult`] an agent publishes on `results.<request_id>`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The outcome of one command on one pc.
///
/// Only `skipped = true` means "did not run"; the exit code says why (see
/// [`crate::policy::exit_codes`]). Timestamps are RFC 3339 UTC and keep
/// nanoseconds.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Unique per command × pc.
    #[serde(default)]
    pub result_id: String,
    /// The [`Command::request_id`](super::Command::request_id) this answers.
    pub request_id: String,
    /// The execution the command belonged to, if any.
    #[serde(default)]
    pub exec_id: Option<String>,
    /// The pc that ran (or skipped) the command.
    pub pc_id: String,
    /// Process exit code, or a reserved code when a gate stopped the command.
    pub exit_code: i32,
    /// `true` only when the command deliberately did not run.
    #[serde(default, deserialize_with = "bool_or_null")]
    pub skipped: bool,
    /// Captured stdout (empty when it overflowed to `stdout_object`).
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr (empty when it overflowed to `stderr_object`).
    #[serde(default)]
    pub stderr: String,
    /// When the child started (or when the gate decided, for a skip).
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub started_at: DateTime<Utc>,
    /// When the child ended (or when the gate decided, for a skip).
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub finished_at: DateTime<Utc>,
    /// `result_output` object key holding stdout too large to inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_object: Option<String>,
    /// `result_output` object key holding stderr too large to inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_object: Option<String>,
    /// The job (manifest) id, when the command came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_id: Option<String>,
    /// How many attempts ran (kanade addition); omitted when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Decodes a missing field, `null` or a bool; `null` means `false`.
fn bool_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}
