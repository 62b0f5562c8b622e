//! Security routes: API tokens (admin), the audit trail (admin) and
//! approvals (operators; the approver's role is the job's rule).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::blocking::db;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParams, QueryParams};
use crate::audit::{PendingAudit, OUTCOME_OK};
use crate::auth::Principal;
use crate::db::{
    ApprovalRequest, ExecutionRow, NewToken, ScheduleApproval, TokenCreateError, TokenRow,
};
use crate::{Backend, BackendError};

/// The answer to `POST /api/tokens`: the token, shown this once.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token's row.
    #[serde(flatten)]
    pub row: TokenRow,
    /// The bearer token itself; only its hash is stored.
    pub token: String,
}

/// `POST /api/executions/{id}/deny` body.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// Why (recorded with the denial and in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/audit` query.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
pub(super) struct AuditQuery {
    /// Entries at or after this instant (RFC 3339).
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    /// Only this actor's entries.
    #[serde(default)]
    actor: Option<String>,
    /// At most this many (default 1,000; 0 = all).
    #[serde(default)]
    limit: Option<usize>,
    /// The newest entries, newest first (the console's view), instead of
    /// the oldest first.
    #[serde(default)]
    newest: bool,
}

pub(super) async fn tokens(State(backend): State<Backend>) -> ApiResult<Vec<TokenRow>> {
    Ok(Json(db(&backend, |db| db.tokens()).await?))
}

pub(super) async fn create_token(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    Body(new): Body<NewToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    crate::auth::require_within(&principal, new.role, &new.scopes)?;
    let store = backend.db().clone();
    let now = backend.now();
    let by = principal.name.clone();
    let mut audit = pending.draft(OUTCOME_OK);
    audit.target = Some(new.name.clone());
    let created = tokio::task::spawn_blocking(move || {
        store.create_token_audited(&new, &by, now, Some(audit))
    })
    .await
    .map_err(BackendError::DbTask)?;
    match created {
        Ok((row, token)) => {
            pending.mark_recorded();
            Ok((StatusCode::CREATED, Json(TokenCreated { row, token })))
        }
        Err(TokenCreateError::Db(e)) => Err(BackendError::from(e).into()),
        Err(other) => Err(BackendError::Invalid(other.to_string()).into()),
    }
}

pub(super) async fn revoke_token(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    PathParams(name): PathParams<String>,
) -> ApiResult<serde_json::Value> {
    if !principal.scopes.is_unrestricted() {
        let all = db(&backend, |db| db.tokens()).await?;
        let Some(row) = all.iter().find(|t| t.name == name || t.id == name) else {
            return Err(BackendError::NotFound(format!("token {name}")).into());
        };
        crate::auth::require_within(&principal, row.role, &row.scopes)?;
    }
    let lookup = name.clone();
    let audit = pending.draft(OUTCOME_OK);
    if db(&backend, move |db| {
        db.revoke_token_audited(&lookup, Some(audit))
    })
    .await?
    {
        pending.mark_recorded();
        Ok(Json(serde_json::json!({"token": name, "revoked": true})))
    } else {
        Err(BackendError::NotFound(format!("token {name}")).into())
    }
}

pub(super) async fn audit(
    State(backend): State<Backend>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Vec<kanade_core::wire::AuditEvent>> {
    let limit = match query.limit {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => 1000,
    };
    Ok(Json(
        db(&backend, move |db| {
            if query.newest {
                db.audit_newest(query.since, query.actor.as_deref(), limit)
            } else {
                db.audit_events(query.since, query.actor.as_deref(), limit)
            }
        })
        .await?,
    ))
}

pub(super) async fn audit_verify(
    State(backend): State<Backend>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let verdict = db(&backend, |db| db.verify_audit()).await?;
    Ok(match verdict {
        Ok(report) => (
            StatusCode::OK,
            Json(
                serde_json::json!({"ok": true, "entries": report.entries, "last_hash": report.last_hash}),
            ),
        ),
        Err(broken) => (
            StatusCode::OK,
            Json(serde_json::json!({"ok": false, "seq": broken.seq, "reason": broken.reason})),
        ),
    })
}

pub(super) async fn approvals(State(backend): State<Backend>) -> ApiResult<Vec<ApprovalRequest>> {
    Ok(Json(backend.awaiting_approvals().await?))
}

pub(super) async fn approve(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    PathParams(id): PathParams<String>,
) -> ApiResult<ExecutionRow> {
    super::scope::require_execution(&backend, &principal, &id).await?;
    let row = backend
        .approve(&id, &principal, Some(pending.draft(OUTCOME_OK)))
        .await?;
    pending.mark_recorded();
    Ok(Json(row))
}

pub(super) async fn deny(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    PathParams(id): PathParams<String>,
    Body(decision): Body<ApprovalDecision>,
) -> ApiResult<ExecutionRow> {
    super::scope::require_execution(&backend, &principal, &id).await?;
    let reason = decision.reason.unwrap_or_default();
    let row = backend
        .deny(&id, &principal, &reason, Some(pending.draft(OUTCOME_OK)))
        .await?;
    pending.mark_recorded();
    Ok(Json(row))
}

pub(super) async fn schedule_approvals(
    State(backend): State<Backend>,
) -> ApiResult<Vec<ScheduleApproval>> {
    Ok(Json(backend.awaiting_schedule_approvals().await?))
}

pub(super) async fn approve_schedule(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    PathParams(id): PathParams<String>,
) -> ApiResult<ScheduleApproval> {
    super::scope::require_schedule(&backend, &principal, &id).await?;
    let request = backend
        .approve_schedule(&id, &principal, Some(pending.draft(OUTCOME_OK)))
        .await?;
    pending.mark_recorded();
    Ok(Json(request))
}

pub(super) async fn deny_schedule(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Extension(pending): Extension<PendingAudit>,
    PathParams(id): PathParams<String>,
) -> ApiResult<ScheduleApproval> {
    super::scope::require_schedule(&backend, &principal, &id).await?;
    let request = backend
        .deny_schedule(&id, &principal, Some(pending.draft(OUTCOME_OK)))
        .await?;
    pending.mark_recorded();
    Ok(Json(request))
}
