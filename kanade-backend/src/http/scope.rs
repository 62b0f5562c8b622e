//! Scope checks that need a lookup first (a job's tags, an execution's
//! job): the decisions themselves are the pure functions in
//! [`crate::auth::decide`]. A job that does not exist is refused exactly
//! like one out of scope, so a scoped principal cannot probe for job ids.

use super::blocking::db;
use super::bodies::{JobUpload, ScheduleUpload};
use super::error::ApiError;
use crate::auth::{require_job, require_target, Denial, Principal};
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

/// Refuses killing an execution whose job is outside the scope.
pub(super) async fn require_execution(
    backend: &Backend,
    principal: &Principal,
    exec_id: &str,
) -> Result<(), ApiError> {
    if !principal.scopes.narrows_jobs() {
        return Ok(());
    }
    let id = exec_id.to_owned();
    let Some(execution) = db(backend, move |db| db.execution(&id)).await? else {
        return Err(ApiError::Forbidden(Denial::JobOutOfScope {
            principal: principal.name.clone(),
            job: format!("of execution {exec_id}"),
        }));
    };
    require_job_by_id(backend, principal, &execution.job_id).await
}

/// Refuses uploading a job outside the scope. A manifest that does not
/// parse passes here: the backend answers it with its problems (422).
pub(super) fn require_job_upload(
    principal: &Principal,
    upload: &JobUpload,
) -> Result<(), ApiError> {
    if !principal.scopes.narrows_jobs() {
        return Ok(());
    }
    match parse_job(&upload.yaml, &upload.script_files) {
        Ok(job) => Ok(require_job(principal, &job.id, &job.tags)?),
        Err(_) => Ok(()),
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
