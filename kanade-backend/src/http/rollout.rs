//! `/api/executions/{id}/rollout`: a rollout's status, and pause, resume
//! and abort (operator; audited by the guard as `rollout.*`, scoped like a
//! kill of the execution).

use axum::extract::{Extension, State};
use axum::Json;

use super::error::ApiResult;
use super::extract::PathParams;
use super::scope;
use crate::auth::Principal;
use crate::{Backend, RolloutStatus};

/// `GET /api/executions/{id}/rollout`.
pub(super) async fn status(
    State(backend): State<Backend>,
    PathParams(id): PathParams<String>,
) -> ApiResult<RolloutStatus> {
    Ok(Json(backend.rollout_status(&id).await?))
}

/// `POST /api/executions/{id}/rollout/pause`.
pub(super) async fn pause(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<RolloutStatus> {
    scope::require_execution(&backend, &principal, &id).await?;
    Ok(Json(backend.pause_rollout(&id).await?))
}

/// `POST /api/executions/{id}/rollout/resume`.
pub(super) async fn resume(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<RolloutStatus> {
    scope::require_execution(&backend, &principal, &id).await?;
    Ok(Json(backend.resume_rollout(&id).await?))
}

/// `POST /api/executions/{id}/rollout/abort`.
pub(super) async fn abort(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<RolloutStatus> {
    scope::require_execution(&backend, &principal, &id).await?;
    Ok(Json(backend.abort_rollout(&id, &principal.name).await?))
}
