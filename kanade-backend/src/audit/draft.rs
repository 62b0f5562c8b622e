//! [`AuditDraft`]: an audit entry before the store chains it, and the
//! outcome names.

use chrono::{DateTime, Utc};
use kanade_core::wire::AuditSource;
use serde::{Deserialize, Serialize};

/// Outcome of an action that did what was asked.
pub const OUTCOME_OK: &str = "ok";
/// Outcome of a call refused for lack of permission (403).
pub const OUTCOME_DENIED: &str = "denied";
/// Outcome of a call without a valid credential (401).
pub const OUTCOME_UNAUTHENTICATED: &str = "unauthenticated";
/// Outcome of an allowed action that failed.
pub const OUTCOME_FAILED: &str = "failed";
/// Outcome of an action waiting for something (an approval).
pub const OUTCOME_PENDING: &str = "pending";

/// An audit entry before the store chains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    /// Idempotency key: appending a draft whose id is already recorded
    /// stores nothing and returns the recorded entry. `None`: a new UUID.
    pub id: Option<String>,
    /// When the action happened.
    pub at: DateTime<Utc>,
    /// Who acted (token name, OIDC subject, `scheduler`, `backend`, …).
    pub actor: String,
    /// Where the request came from.
    pub source: AuditSource,
    /// What was done (`exec`, `revoke`, `approve`, …).
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// How it ended (`ok`, `denied`, `unauthenticated`, `failed`, `pending`, …;
    /// see the `OUTCOME_*` constants).
    pub outcome: String,
    /// The request's parameters: only their digest (`params_sha256`) is kept.
    pub params: serde_json::Value,
    /// Free-form detail, kept as is.
    pub details: serde_json::Value,
}

impl AuditDraft {
    /// A draft with a fresh id, no target, `null` parameters and details.
    pub fn new(
        at: DateTime<Utc>,
        actor: impl Into<String>,
        source: AuditSource,
        action: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            id: None,
            at,
            actor: actor.into(),
            source,
            action: action.into(),
            target: None,
            outcome: outcome.into(),
            params: serde_json::Value::Null,
            details: serde_json::Value::Null,
        }
    }
}
