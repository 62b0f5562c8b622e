//! Pure authorisation decisions (DESIGN §10: default deny): does a role
//! suffice, is a job in a principal's scope, is a target. No I/O: the HTTP
//! layer and the backend call these with what they looked up.

use super::principal::{Principal, Role, Scopes};
use crate::manifest::Target;

/// Why an authenticated principal is refused (answered 403). The texts name
/// what the principal asked for and its own limits, never other
/// principals or what else exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The principal's role is below the one the action needs.
    #[error("this needs the {needed} role; {principal} is {have}")]
    Role {
        /// The principal's name.
        principal: String,
        /// The role the action needs.
        needed: Role,
        /// The principal's role.
        have: Role,
    },
    /// The job is outside the principal's job scope.
    #[error("job {job} is outside the scope of {principal}")]
    JobOutOfScope {
        /// The principal's name.
        principal: String,
        /// The job asked for.
        job: String,
    },
    /// The target is outside the principal's target scope.
    #[error("{what} is outside the target scope of {principal} (groups {groups:?}, pcs {pcs:?})")]
    TargetOutOfScope {
        /// The principal's name.
        principal: String,
        /// The part of the target that is out of scope (`all`, `group x`, `pc y`).
        what: String,
        /// The groups the principal may target.
        groups: Vec<String>,
        /// The pcs the principal may target.
        pcs: Vec<String>,
    },
    /// An approval rule refuses this principal (its own request, the wrong
    /// role for this job's approvals).
    #[error("{0}")]
    Approval(String),
}

/// Refuses unless `principal` has at least `needed`.
///
/// # Errors
/// [`Denial::Role`].
pub fn require_role(principal: &Principal, needed: Role) -> Result<(), Denial> {
    if principal.role >= needed {
        Ok(())
    } else {
        Err(Denial::Role {
            principal: principal.name.clone(),
            needed,
            have: principal.role,
        })
    }
}

/// Whether a job (its id and tags) is inside `scopes`: no job narrowing,
/// or its id listed, or one of its tags listed.
pub fn job_in_scope(scopes: &Scopes, job_id: &str, tags: &[String]) -> bool {
    !scopes.narrows_jobs()
        || scopes.jobs.iter().any(|j| j == job_id)
        || tags.iter().any(|t| scopes.tags.contains(t))
}

/// Refuses a job outside the principal's scope.
///
/// # Errors
/// [`Denial::JobOutOfScope`].
pub fn require_job(principal: &Principal, job_id: &str, tags: &[String]) -> Result<(), Denial> {
    if job_in_scope(&principal.scopes, job_id, tags) {
        Ok(())
    } else {
        Err(Denial::JobOutOfScope {
            principal: principal.name.clone(),
            job: job_id.to_owned(),
        })
    }
}

/// Refuses a target outside the principal's target scope: with groups or
/// pcs narrowed, `all` is refused and every named group / pc must be
/// listed (a pc is in scope only by name: group membership can change
/// under a running command).
///
/// # Errors
/// [`Denial::TargetOutOfScope`] naming the first part out of scope.
pub fn require_target(principal: &Principal, target: &Target) -> Result<(), Denial> {
    let scopes = &principal.scopes;
    if !scopes.narrows_targets() {
        return Ok(());
    }
    let refuse = |what: String| Denial::TargetOutOfScope {
        principal: principal.name.clone(),
        what,
        groups: scopes.groups.clone(),
        pcs: scopes.pcs.clone(),
    };
    if target.all {
        return Err(refuse("target all".to_owned()));
    }
    if let Some(group) = target.groups.iter().find(|g| !scopes.groups.contains(g)) {
        return Err(refuse(format!("group {group}")));
    }
    if let Some(pc) = target.pcs.iter().find(|p| !scopes.pcs.contains(p)) {
        return Err(refuse(format!("pc {pc}")));
    }
    Ok(())
}

/// Whether `inner` is no wider than `outer`: on every axis `outer`
/// narrows (jobs/tags, groups/pcs), `inner` narrows too, to a subset. An
/// unrestricted `outer` contains everything; a scoped admin can therefore
/// only mint and revoke tokens inside its own scope.
pub fn scopes_within(inner: &Scopes, outer: &Scopes) -> bool {
    let subset = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x));
    let jobs_ok = !outer.narrows_jobs()
        || (inner.narrows_jobs()
            && subset(&inner.jobs, &outer.jobs)
            && subset(&inner.tags, &outer.tags));
    let targets_ok = !outer.narrows_targets()
        || (inner.narrows_targets()
            && subset(&inner.groups, &outer.groups)
            && subset(&inner.pcs, &outer.pcs));
    jobs_ok && targets_ok
}

/// Refuses a token (to create or revoke) wider than `principal` itself:
/// a higher role, or scopes outside its own.
///
/// # Errors
/// [`Denial::Approval`] naming the principal's limits.
pub fn require_within(principal: &Principal, role: Role, scopes: &Scopes) -> Result<(), Denial> {
    if role > principal.role || !scopes_within(scopes, &principal.scopes) {
        return Err(Denial::Approval(format!(
            "{} may only manage tokens within its own role ({}) and scopes",
            principal.name, principal.role
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::CredentialKind;

    fn principal(role: Role, scopes: Scopes) -> Principal {
        Principal {
            name: "ci".into(),
            role,
            scopes,
            kind: CredentialKind::Token,
        }
    }

    fn target(all: bool, groups: &[&str], pcs: &[&str]) -> Target {
        Target {
            all,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            pcs: pcs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_scoped_principal_manages_only_narrower_tokens() {
        let canary = Scopes {
            groups: vec!["canary".into()],
            ..Scopes::default()
        };
        let open = Scopes::default();
        assert!(scopes_within(&canary, &open));
        assert!(!scopes_within(&open, &canary), "unscoped is wider");
        assert!(scopes_within(&canary, &canary));
        let prod = Scopes {
            groups: vec!["canary".into(), "prod".into()],
            ..Scopes::default()
        };
        assert!(!scopes_within(&prod, &canary));
        let pc_only = Scopes {
            pcs: vec!["pc-1".into()],
            ..Scopes::default()
        };
        assert!(
            !scopes_within(&pc_only, &canary),
            "a pc outside the groups list"
        );
        let admin = principal(Role::Admin, canary.clone());
        assert!(require_within(&admin, Role::Admin, &canary).is_ok());
        assert!(require_within(&admin, Role::Viewer, &open).is_err());
        let operator = principal(Role::Operator, open.clone());
        assert!(require_within(&operator, Role::Admin, &open).is_err());
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = principal(Role::Viewer, Scopes::default());
        assert!(require_role(&viewer, Role::Viewer).is_ok());
        let denial = require_role(&viewer, Role::Operator).unwrap_err();
        assert_eq!(
            denial.to_string(),
            "this needs the operator role; ci is viewer"
        );
        let admin = principal(Role::Admin, Scopes::default());
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert!(require_role(&admin, role).is_ok());
        }
    }

    #[test]
    fn job_scope_by_id_or_tag() {
        let open = Scopes::default();
        assert!(job_in_scope(&open, "any", &[]));
        let scoped = Scopes {
            jobs: vec!["patch".into()],
            tags: vec!["safe".into()],
            ..Scopes::default()
        };
        assert!(job_in_scope(&scoped, "patch", &[]));
        assert!(job_in_scope(&scoped, "other", &["safe".into()]));
        assert!(!job_in_scope(&scoped, "other", &["risky".into()]));
        assert!(!job_in_scope(&scoped, "other", &[]));
    }

    #[test]
    fn target_scope_refuses_all_and_foreign_groups_and_pcs() {
        let canary = principal(
            Role::Operator,
            Scopes {
                groups: vec!["canary".into()],
                pcs: vec!["pc-9".into()],
                ..Scopes::default()
            },
        );
        assert!(require_target(&canary, &target(false, &["canary"], &[])).is_ok());
        assert!(require_target(&canary, &target(false, &["canary"], &["pc-9"])).is_ok());
        for (bad, what) in [
            (target(true, &[], &[]), "target all"),
            (target(false, &["canary", "prod"], &[]), "group prod"),
            (target(false, &[], &["pc-1"]), "pc pc-1"),
        ] {
            let denial = require_target(&canary, &bad).unwrap_err();
            assert!(denial.to_string().starts_with(what), "{denial}");
        }
        let unscoped = principal(Role::Operator, Scopes::default());
        assert!(require_target(&unscoped, &target(true, &[], &[])).is_ok());
    }
}
