//! Scope checks that need a lookup first (a job's tags, an execution's
//! job): the decisions themselves are the pure functions in
//! [`crate::auth::decide`]. A job that does not exist is refused exactly
//! like one out of scope, so a scoped principal cannot probe for job ids.

use super::blocking::db;
use super::bodies::{JobUpload, ScheduleUpload};
use super::error::ApiError;
use crate::approval::RequireApproval;
use crate::auth::{require_job, require_role, require_target, Denial, Principal, Role};
use crate::manifest::{parse_job, parse_schedule};
use crate::{Backend, BackendError};

/// Refuses a job outside `principal`'s job scope (or unknown to it).
pub(super) async fn require_job_by_id(
    backend: &Backend,
    principal: &Principal,
    job_id: &str,
) -> Result<(), ApiError> {
    if !principal.scopes.narrows_jobs() {
        return Ok(());
    }
    let tags = match backend.job(job_id).await {
        Ok(job) => job.tags,
        Err(BackendError::NotFound(_)) => Vec::new(),
        Err(other) => return Err(other.into()),
    };
    Ok(require_job(principal, job_id, &tags)?)
}

/// Refuses acting on (killing, approving, denying) an execution whose job
/// or target is outside the scope.
pub(super) async fn require_execution(
    backend: &Backend,
    principal: &Principal,
    exec_id: &str,
) -> Result<(), ApiError> {
    if principal.scopes.is_unrestricted() {
        return Ok(());
    }
    let id = exec_id.to_owned();
    let Some(execution) = db(backend, move |db| db.execution(&id)).await? else {
        return Err(ApiError::Forbidden(Denial::JobOutOfScope {
            principal: principal.name.clone(),
            job: format!("of execution {exec_id}"),
        }));
    };
    require_job_by_id(backend, principal, &execution.job_id).await?;
    let target: crate::manifest::Target =
        serde_json::from_str(&execution.target).unwrap_or(crate::manifest::Target {
            all: true,
            ..Default::default()
        });
    Ok(require_target(principal, &target)?)
}

/// Refuses turning a schedule on or off when its job or target is outside
/// the scope (an unknown schedule is refused alike for scoped principals).
pub(super) async fn require_schedule(
    backend: &Backend,
    principal: &Principal,
    schedule_id: &str,
) -> Result<(), ApiError> {
    if principal.scopes.is_unrestricted() {
        return Ok(());
    }
    match backend.schedule(schedule_id).await {
        Ok(schedule) => {
            require_job_by_id(backend, principal, &schedule.job_id).await?;
            Ok(require_target(principal, &schedule.target)?)
        }
        Err(BackendError::NotFound(_)) => Err(ApiError::Forbidden(Denial::Approval(format!(
            "schedule {schedule_id} is outside the scope of {}",
            principal.name
        )))),
        Err(other) => Err(other.into()),
    }
}

/// Refuses fleet-wide changes (the freeze) to a scoped principal.
pub(super) fn require_unscoped(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.scopes.is_unrestricted() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(Denial::Approval(format!(
            "{what} is fleet-wide; {} is scoped",
            principal.name
        ))))
    }
}

/// Refuses uploading a job outside the scope — the manifest's job and, when
/// a job with that id exists, the existing one too (a tag-scoped principal
/// cannot take over another job by re-tagging it) — and refuses, below
/// admin, a manifest that weakens an existing job's `require_approval`
/// (fewer approvals, a lower approver role, or none). A manifest that does
/// not parse passes here: the backend answers it with its problems (422).
pub(super) async fn require_job_upload(
    backend: &Backend,
    principal: &Principal,
    upload: &JobUpload,
) -> Result<(), ApiError> {
    let Ok(job) = parse_job(&upload.yaml, &upload.script_files) else {
        return Ok(());
    };
    require_job(principal, &job.id, &job.tags)?;
    let existing = match backend.job(&job.id).await {
        Ok(existing) => existing,
        Err(BackendError::NotFound(_)) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    require_job(principal, &existing.id, &existing.tags)?;
    if weakens(&existing.require_approval, &job.require_approval) {
        require_role(principal, Role::Admin).map_err(|_| {
            Denial::Approval(format!(
                "job {} requires approval; only an admin may weaken or remove that",
                job.id
            ))
        })?;
    }
    Ok(())
}

/// Whether `new` asks less than `old`: no approval where one was needed,
/// fewer approvals, or a lower approver role. Pure.
fn weakens(old: &RequireApproval, new: &RequireApproval) -> bool {
    let at = chrono::DateTime::UNIX_EPOCH;
    match (old.rule_at(at), new.rule_at(at)) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(old), Some(new)) => new.approvals < old.approvals || new.role < old.role,
    }
}

/// Refuses a schedule whose job or target is outside the scope.
pub(super) async fn require_schedule_upload(
    backend: &Backend,
    principal: &Principal,
    upload: &ScheduleUpload,
) -> Result<(), ApiError> {
    if principal.scopes.is_unrestricted() {
        return Ok(());
    }
    let Ok(schedule) = parse_schedule(&upload.yaml) else {
        return Ok(());
    };
    require_job_by_id(backend, principal, &schedule.job_id).await?;
    Ok(require_target(principal, &schedule.target)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::ApprovalSpec;

    fn rule(approvals: u32, role: Role) -> RequireApproval {
        RequireApproval::Rule(ApprovalSpec {
            approvals,
            role,
            ttl: "1h".into(),
        })
    }

    #[test]
    fn weakening_an_approval_rule_is_told_apart() {
        let off = RequireApproval::Flag(false);
        let on = RequireApproval::Flag(true);
        assert!(weakens(&on, &off));
        assert!(!weakens(&off, &on));
        assert!(!weakens(&off, &off));
        assert!(weakens(&rule(2, Role::Admin), &rule(1, Role::Admin)));
        assert!(weakens(&rule(2, Role::Admin), &rule(2, Role::Operator)));
        assert!(!weakens(&rule(2, Role::Operator), &rule(3, Role::Admin)));
        assert!(!weakens(&on, &rule(1, Role::Operator)));
    }
}
