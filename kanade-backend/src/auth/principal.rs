//! Who is calling: [`Role`], [`Scopes`] and the [`Principal`] a credential
//! resolves to (DESIGN §10).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a principal may do, in increasing power (as the reference):
/// `viewer` reads; `operator` also execs, kills, revokes, pins, applies
/// jobs and schedules, freezes and approves; `admin` also manages tokens,
/// trust and config.
#[derive(
    schemars::JsonSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Runs and stops work.
    Operator,
    /// Manages who may do what.
    Admin,
}

impl Role {
    /// The lowercase name (`viewer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is not `viewer`, `operator` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// What a principal is narrowed to. Each list empty = no narrowing on that
/// axis. Jobs: a job is in scope when its id is in `jobs` or one of its
/// tags is in `tags` (either list set narrows; both empty = every job).
/// Targets: when `groups` or `pcs` is set, a target must name only those
/// groups / pcs, and `all` is out of scope.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes {
    /// Job ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Job tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Agent groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Pc ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcs: Vec<String>,
}

impl Scopes {
    /// Whether nothing narrows this principal.
    pub fn is_unrestricted(&self) -> bool {
        self.jobs.is_empty()
            && self.tags.is_empty()
            && self.groups.is_empty()
            && self.pcs.is_empty()
    }

    /// Whether targets are narrowed (groups or pcs set).
    pub fn narrows_targets(&self) -> bool {
        !self.groups.is_empty() || !self.pcs.is_empty()
    }

    /// Whether jobs are narrowed (ids or tags set).
    pub fn narrows_jobs(&self) -> bool {
        !self.jobs.is_empty() || !self.tags.is_empty()
    }
}

/// How a principal authenticated.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// A kanade API token.
    Token,
    /// An OIDC JWT from the configured issuer.
    Oidc,
    /// No credential: the backend runs with `--insecure-no-auth`, or the
    /// call is the backend's own (scheduler, in-process embedding).
    Local,
}

/// An authenticated caller.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The token's name or the OIDC subject; the audit trail's actor.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// What it is narrowed to.
    pub scopes: Scopes,
    /// How it authenticated.
    pub kind: CredentialKind,
}

impl Principal {
    /// The principal of calls made in-process (the quickstart, embedders,
    /// the scheduler): an unrestricted admin named `name`.
    pub fn local(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            role: Role::Admin,
            scopes: Scopes::default(),
            kind: CredentialKind::Local,
        }
    }
}
