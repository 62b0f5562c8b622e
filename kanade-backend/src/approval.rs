//! Approvals, M-of-N (the ops-contract seed, DESIGN §5 and §10): a job's
//! `require_approval` (`true` for one approver, or `{approvals, role,
//! ttl}`), and the pure decision of what one approver's vote does to an
//! execution waiting in `awaiting_approval`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{Denial, Principal, Role};

/// How long a request waits for its approvals unless the job says.
pub const DEFAULT_APPROVAL_TTL: &str = "24h";

/// A job's `require_approval`: a flag (`true`: one operator's approval
/// within 24 h) or a rule.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequireApproval {
    /// `true` / `false`.
    Flag(bool),
    /// `{approvals: 2, role: admin, ttl: 24h}`.
    Rule(ApprovalSpec),
}

impl Default for RequireApproval {
    fn default() -> Self {
        RequireApproval::Flag(false)
    }
}

/// `require_approval: {approvals, role, ttl}` as written.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// How many distinct approvers (M), 1 to 10.
    #[serde(default = "one")]
    pub approvals: u32,
    /// The least role an approver needs.
    #[serde(default = "operator")]
    pub role: Role,
    /// How long the request waits (humantime), 1 minute to 30 days.
    #[serde(default = "default_ttl")]
    pub ttl: String,
}

fn one() -> u32 {
    1
}

fn operator() -> Role {
    Role::Operator
}

fn default_ttl() -> String {
    DEFAULT_APPROVAL_TTL.to_owned()
}

/// The rule an execution waits under (stored with it, so a later change to
/// the job does not move the goalposts of a pending request).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// Distinct approvals needed.
    pub approvals: u32,
    /// The least role of an approver.
    pub role: Role,
    /// When the request expires (RFC 3339).
    pub expires_at: DateTime<Utc>,
}

impl RequireApproval {
    /// Whether the job needs approval at all.
    pub fn required(&self) -> bool {
        !matches!(self, RequireApproval::Flag(false))
    }

    /// The manifest problems of this value (field path relative to
    /// `require_approval`, message), empty when valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let RequireApproval::Rule(spec) = self else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if !(1..=10).contains(&spec.approvals) {
            problems.push((
                "approvals",
                format!("{} is not from 1 to 10", spec.approvals),
            ));
        }
        match humantime::parse_duration(&spec.ttl) {
            Ok(ttl) if ttl.as_secs() >= 60 && ttl.as_secs() <= 30 * 86_400 => {}
            Ok(_) => problems.push(("ttl", format!("{:?} is not from 1m to 30d", spec.ttl))),
            Err(e) => problems.push(("ttl", crate::wording::duration_problem(&spec.ttl, &e))),
        }
        problems
    }

    /// The rule a request made at `now` waits under; `None` when no
    /// approval is required.
    pub fn rule_at(&self, now: DateTime<Utc>) -> Option<ApprovalRule> {
        let spec = match self {
            RequireApproval::Flag(false) => return None,
            RequireApproval::Flag(true) => ApprovalSpec {
                approvals: 1,
                role: Role::Operator,
                ttl: default_ttl(),
            },
            RequireApproval::Rule(spec) => spec.clone(),
        };
        let ttl =
            humantime::parse_duration(&spec.ttl).unwrap_or(std::time::Duration::from_secs(86_400));
        Some(ApprovalRule {
            approvals: spec.approvals.max(1),
            role: spec.role,
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)),
        })
    }
}

/// What one approval does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// Counted; more approvals are needed (this many in all so far).
    Counted(u32),
    /// Counted, and the quorum is reached: publish the command.
    Quorum,
}

/// Decides an approval by `approver` of a request by `requester` under
/// `rule`, with `approvers` the principals who approved already and
/// `approver_creator` who created the approver's API token (a requester
/// cannot approve through a token they minted). Pure: the caller stores
/// the vote and acts on the answer.
///
/// # Errors
/// [`Denial::Approval`]: the request has expired, the approver is the
/// requester or holds a token the requester created, has already
/// approved, or lacks the rule's role.
pub fn decide_approval(
    rule: &ApprovalRule,
    requester: &str,
    approvers: &[String],
    approver: &Principal,
    approver_creator: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vote, Denial> {
    if now >= rule.expires_at {
        return Err(Denial::Approval(format!(
            "the request expired at {}",
            rule.expires_at.to_rfc3339()
        )));
    }
    if approver.name == requester {
        return Err(Denial::Approval(format!(
            "{} requested this execution and cannot approve it",
            approver.name
        )));
    }
    if approver_creator == Some(requester) {
        return Err(Denial::Approval(format!(
            "{} holds a token {requester} created, and {requester} requested this execution",
            approver.name
        )));
    }
    if approvers.iter().any(|a| a == &approver.name) {
        return Err(Denial::Approval(format!(
            "{} has already approved this execution",
            approver.name
        )));
    }
    if approver.role < rule.role {
        return Err(Denial::Approval(format!(
            "approving this execution needs the {} role; {} is {}",
            rule.role, approver.name, approver.role
        )));
    }
    let count = approvers.len() as u32 + 1;
    Ok(if count >= rule.approvals {
        Vote::Quorum
    } else {
        Vote::Counted(count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{CredentialKind, Scopes};

    fn who(name: &str, role: Role) -> Principal {
        Principal {
            name: name.into(),
            role,
            scopes: Scopes::default(),
            kind: CredentialKind::Token,
        }
    }

    #[test]
    fn the_manifest_forms_parse_and_validate() {
        let flag: RequireApproval = serde_yaml_ng::from_str("true").unwrap();
        assert!(flag.required());
        let off: RequireApproval = serde_yaml_ng::from_str("false").unwrap();
        assert!(!off.required() && off.rule_at(Utc::now()).is_none());
        let rule: RequireApproval =
            serde_yaml_ng::from_str("{approvals: 2, role: admin, ttl: 2h}").unwrap();
        let now = Utc::now();
        let r = rule.rule_at(now).unwrap();
        assert_eq!((r.approvals, r.role), (2, Role::Admin));
        assert_eq!(r.expires_at, now + chrono::Duration::hours(2));
        assert!(rule.problems().is_empty());
        let bad: RequireApproval = serde_yaml_ng::from_str("{approvals: 0, ttl: soon}").unwrap();
        assert_eq!(bad.problems().len(), 2);
        assert!(serde_yaml_ng::from_str::<RequireApproval>("{approvers: 2}").is_err());
    }

    #[test]
    fn m_of_n_counts_distinct_approvers_with_the_role_never_the_requester() {
        let now = Utc::now();
        let rule = ApprovalRule {
            approvals: 2,
            role: Role::Operator,
            expires_at: now + chrono::Duration::hours(1),
        };
        let alice = who("alice", Role::Operator);
        let bob = who("bob", Role::Admin);
        let viewer = who("val", Role::Viewer);
        assert!(
            decide_approval(&rule, "alice", &[], &alice, None, now).is_err(),
            "self-approval"
        );
        assert!(
            decide_approval(&rule, "carol", &[], &viewer, None, now).is_err(),
            "role"
        );
        assert_eq!(
            decide_approval(&rule, "carol", &[], &alice, None, now),
            Ok(Vote::Counted(1))
        );
        let approved = vec!["alice".to_owned()];
        assert!(
            decide_approval(&rule, "carol", &approved, &alice, None, now).is_err(),
            "twice"
        );
        assert_eq!(
            decide_approval(&rule, "carol", &approved, &bob, None, now),
            Ok(Vote::Quorum)
        );
        let late = rule.expires_at;
        assert!(
            decide_approval(&rule, "carol", &[], &bob, None, late).is_err(),
            "expired"
        );
    }
}
