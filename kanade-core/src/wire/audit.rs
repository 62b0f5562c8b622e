//! [`AuditEvent`]: one entry of the append-only, hash-chained audit trail.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Something an actor did, published on `audit.<actor>.<action>[.<target>]`.
///
/// Entries chain: `prev_hash` is the `hash` of the entry before, so a
/// rewritten or removed entry breaks the chain. `id` makes replays idempotent.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Unique id of the entry; a replay with a known id records nothing.
    pub id: String,
    /// When the action happened.
    pub at: DateTime<Utc>,
    /// Who acted (operator name, `scheduler`, `backend`, …).
    pub actor: String,
    /// What was done (`exec`, `revoke`, `approve`, …).
    pub action: String,
    /// What it was done to (a job id, an execution id, a pc id, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Free-form detail.
    #[serde(default)]
    pub details: serde_json::Value,
    /// Hex sha256 of the previous entry (empty for the first).
    #[serde(default)]
    pub prev_hash: String,
    /// Hex sha256 over this entry's content and `prev_hash`.
    #[serde(default)]
    pub hash: String,
}
