//! [`AuditEvent`]: one entry of the append-only, hash-chained audit trail,
//! and [`AuditSource`], where the request behind it came from.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Something an actor did, published on `audit.<actor>.<action>[.<target>]`.
///
/// Entries chain: `prev_hash` is the `hash` of the entry before, so a
/// rewritten or removed entry breaks the chain. `id` makes replays idempotent.
///
/// `seq`, `source`, `outcome` and `params_sha256` are optional on the wire
/// (entries from older publishers lack them) and left out when unset.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
pub struct AuditEvent {
    /// Unique id of the entry; a replay with a known id records nothing.
    pub id: String,
    /// Position in the chain: 1 for the first entry, then one more each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the action happened.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// Who acted (operator name, `scheduler`, `backend`, …).
    pub actor: String,
    /// Where the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AuditSource>,
    /// What was done (`exec`, `revoke`, `approve`, …).
    pub action: String,
    /// What it was done to (a job id, an execution id, a pc id, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How it ended: `ok`, `denied`, `unauthenticated`, `failed`, `pending`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Hex sha256 of the canonical JSON of the request's parameters (the
    /// parameters themselves are not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_sha256: Option<String>,
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

/// Where an audited request came from.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditSource {
    /// The client's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The kind of client: `cli`, `api` or `backend` (the backend itself).
    pub kind: String,
}
