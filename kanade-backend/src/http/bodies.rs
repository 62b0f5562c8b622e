//! The API's request bodies and queries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A job upload: the YAML, plus any `script_file` bodies it names.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct JobUpload {
    /// The manifest, verbatim.
    pub yaml: String,
    /// `script_file` name → body.
    #[serde(default)]
    pub script_files: BTreeMap<String, String>,
    /// Replace the content of a version applied before (audited as
    /// `job.replace`); without it such an upload is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// `POST /api/jobs/{id}/exec` body: the target (`all`, `groups`, `pcs`,
/// as a schedule's `target:`), and optionally a self-stopping `rollout`
/// (DESIGN §11). A bare target, as before rollouts, is still a valid body.
/// The target's fields are spelled out rather than flattened from
/// [`Target`](crate::manifest::Target): serde cannot flatten into a struct
/// that refuses unknown fields.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Every agent.
    #[serde(default)]
    pub all: bool,
    /// These groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// These pcs.
    #[serde(default)]
    pub pcs: Vec<String>,
    /// Batches, window, waves and the error budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::spec::RolloutSpec>,
}

impl ExecRequest {
    /// The target part.
    pub fn target(&self) -> crate::manifest::Target {
        crate::manifest::Target {
            all: self.all,
            groups: self.groups.clone(),
            pcs: self.pcs.clone(),
        }
    }
}

/// `GET /api/executions/{id}?after=<fingerprint>&wait=30s`: wait (at most
/// 60 s) until the execution no longer has the fingerprint `after`
/// ([`ExecutionRow::fingerprint`](crate::db::ExecutionRow::fingerprint)),
/// then return it. Without `after`, or without `wait`, it returns at once.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionWait {
    /// The fingerprint the client already has.
    #[serde(default)]
    pub after: Option<String>,
    /// How long to wait for a change (humantime, at most 60 s).
    #[serde(default)]
    pub wait: Option<String>,
}

/// A schedule upload.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleUpload {
    /// The manifest, verbatim.
    pub yaml: String,
}

/// `POST /api/jobs/{id}/pin` body.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    /// The version agents may run.
    pub version: String,
}

/// `GET /api/schedules/{id}/preview?n=5` query.
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
pub struct PreviewQuery {
    /// How many fire times.
    #[serde(default = "five")]
    pub n: usize,
}

fn five() -> usize {
    5
}

/// `POST /api/freeze` body.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
pub struct FreezeRequest {
    /// RFC 3339 end (absent: until cleared).
    #[serde(default)]
    pub until: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/executions/{id}/results` query: all of them with their
/// output by default.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Only this pc's result.
    #[serde(default)]
    pub pc: Option<String>,
    /// `false`: `stdout` and `stderr` come back empty (the rows of a large
    /// fleet without every pc's output). Default `true`.
    #[serde(default)]
    pub output: Option<bool>,
}

/// `GET /api/executions/{id}`: the row and its
/// [`fingerprint`](crate::db::ExecutionRow::fingerprint), which a client
/// passes back as `after` to wait for the next change.
#[derive(schemars::JsonSchema, Debug, Clone, serde::Serialize)]
pub struct ExecutionAnswer {
    /// The execution.
    #[serde(flatten)]
    pub row: crate::db::ExecutionRow,
    /// Its fingerprint now.
    pub fingerprint: String,
    /// It will never run anything again
    /// ([`execution_over`](crate::execution_over)).
    pub over: bool,
}
