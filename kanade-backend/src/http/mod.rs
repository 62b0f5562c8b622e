//! The HTTP API (JSON). Errors come back as `{"error": …, "details": …}`
//! with a fitting status code: 4xx when the request is at fault, 500 when
//! the backend is (see [`error_response`] for the table).
//!
//! Waiting on an execution is pushed, not polled:
//! `GET /api/executions/{id}?after=<fingerprint>&wait=30s` holds the
//! request until the execution's status or counters change (or `wait`, at
//! most 60 s, passes) and returns the row; `after` is the
//! [`fingerprint`](crate::db::ExecutionRow::fingerprint) of the row the
//! client has. `kanade exec` and `kanade results --follow` use it.

mod agent_releases;
mod blocking;
mod bodies;
mod error;
mod extract;
mod guard;
pub mod health;
mod inventory;
mod long_poll;
pub mod openapi;
mod rollout;
pub mod routes;
mod scope;
mod security;

use axum::extract::{Extension, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};

use serde_json::json;

use self::blocking::db;
pub use self::bodies::{
    ExecRequest, ExecutionAnswer, ExecutionWait, FreezeRequest, JobUpload, PinRequest,
    PreviewQuery, ResultsQuery, ScheduleUpload,
};
use self::error::ApiResult;
pub use self::error::{error_response, ApiError, ErrorBody};
use self::extract::{Body, PathParams, QueryParams};
pub use self::guard::ApiAuth;
pub use self::inventory::{
    CheckStatesQuery, ChecksQuery, HistoryQuery, InventoryAnswer, InventoryQuery,
};
pub use self::security::{ApprovalDecision, TokenCreated};
use crate::auth::Principal;
use crate::{Backend, BackendError};

/// The API's routes over `backend`, every `/api` route behind the guard
/// with API tokens from the backend's database (no OIDC): see
/// [`router_with`].
pub fn router(backend: Backend) -> Router {
    router_with(backend, ApiAuth::default())
}

/// The API's routes over `backend`, authenticated as `auth` says. Every
/// `/api` route needs a credential and the role the table in [`routes`]
/// gives it; `/healthz` is open.
pub fn router_with(backend: Backend, auth: ApiAuth) -> Router {
    let sign_in = auth.oidc.as_ref().and_then(|verifier| {
        let config = verifier.config();
        config.console.as_ref().map(|c| c.offer(&config.audience))
    });
    let guarded = guard::GuardState {
        backend: backend.clone(),
        auth: std::sync::Arc::new(auth),
    };
    let api = Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/agents", get(agents))
        .route("/api/agents/{pc}", get(agent))
        .route("/api/agents/versions", get(agent_releases::versions))
        .route(
            "/api/agent-releases",
            get(agent_releases::list)
                .post(agent_releases::publish)
                .layer(axum::extract::DefaultBodyLimit::max(
                    agent_releases::BODY_LIMIT,
                )),
        )
        .route(
            "/api/agent-rollout",
            get(agent_releases::status).post(agent_releases::roll_out),
        )
        .route("/api/jobs", get(jobs).post(apply_job))
        .route("/api/jobs/{id}", get(job))
        .route("/api/schedules", get(schedules).post(apply_schedule))
        .route("/api/jobs/{id}/exec", post(exec))
        .route("/api/jobs/{id}/revoke", post(revoke))
        .route("/api/jobs/{id}/activate", post(activate))
        .route("/api/jobs/{id}/pin", post(pin))
        .route("/api/jobs/{id}/unpin", post(unpin))
        .route("/api/pins", get(pins))
        .route("/api/executions", get(executions))
        .route("/api/executions/{id}", get(execution))
        .route("/api/executions/{id}/results", get(results))
        .route("/api/executions/{id}/kill", post(kill))
        .route("/api/executions/{id}/rollout", get(rollout::status))
        .route("/api/executions/{id}/rollout/pause", post(rollout::pause))
        .route("/api/executions/{id}/rollout/resume", post(rollout::resume))
        .route("/api/executions/{id}/rollout/abort", post(rollout::abort))
        .route("/api/executions/{id}/approve", post(security::approve))
        .route("/api/executions/{id}/deny", post(security::deny))
        .route("/api/approvals", get(security::approvals))
        .route("/api/schedules/{id}/preview", get(preview))
        .route("/api/schedules/{id}/enable", post(enable))
        .route("/api/schedules/{id}/disable", post(disable))
        .route(
            "/api/schedules/{id}/approve",
            post(security::approve_schedule),
        )
        .route("/api/schedules/{id}/deny", post(security::deny_schedule))
        .route("/api/schedule-approvals", get(security::schedule_approvals))
        .route(
            "/api/freeze",
            get(freeze_status).post(freeze_set).delete(freeze_clear),
        )
        .route(
            "/api/tokens",
            get(security::tokens).post(security::create_token),
        )
        .route(
            "/api/tokens/{name}",
            axum::routing::delete(security::revoke_token),
        )
        .route("/api/inventory/{job}", get(inventory::inventory))
        .route("/api/inventory/{job}/history", get(inventory::history))
        .route("/api/checks", get(inventory::checks))
        .route("/api/checks/{name}", get(inventory::check_states))
        .route("/api/audit", get(security::audit))
        .route("/api/audit/verify", get(security::audit_verify))
        .route("/metrics", get(health::metrics))
        .route_layer(axum::middleware::from_fn_with_state(guarded, guard::guard))
        .layer(axum::extract::DefaultBodyLimit::max(guard::BODY_LIMIT));
    // Health says whether commands go out signed (enforcing agents refuse
    // unsigned ones).
    let signing = backend.signing();
    let results_verified = backend.verifies_publishers();
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                Json(json!({"ok": true, "signing": signing, "results_verified": results_verified}))
            }),
        )
        .route("/readyz", get(health::readyz))
        .route("/api/openapi.json", get(openapi::serve))
        .merge(crate::console::routes(sign_in))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            backend.clone(),
            health::count_requests,
        ))
        .with_state(backend)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn whoami(Extension(principal): Extension<Principal>) -> ApiResult<Principal> {
    Ok(Json(principal))
}

async fn agents(State(backend): State<Backend>) -> ApiResult<Vec<crate::db::AgentRow>> {
    Ok(Json(backend.fleet().await?))
}

async fn agent(
    State(backend): State<Backend>,
    PathParams(pc): PathParams<String>,
) -> ApiResult<crate::backend::PcView> {
    Ok(Json(backend.pc_view(&pc).await?))
}

async fn jobs(State(backend): State<Backend>) -> ApiResult<Vec<crate::manifest::Job>> {
    Ok(Json(backend.jobs().await?))
}

async fn job(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<crate::backend::JobView> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    Ok(Json(backend.job_view(&id).await?))
}

async fn apply_job(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Body(upload): Body<JobUpload>,
) -> ApiResult<crate::manifest::Job> {
    scope::require_job_upload(&backend, &principal, &upload).await?;
    let applied = backend
        .apply_job_with(&upload.yaml, &upload.script_files, upload.replace)
        .await?;
    if applied.replaced {
        // A version's content changed in place: on the record, by whom.
        let source = kanade_core::wire::AuditSource {
            ip: None,
            kind: "api".into(),
        };
        let mut entry = crate::audit::AuditDraft::new(
            backend.now(),
            principal.name.clone(),
            source,
            "job.replace",
            crate::audit::OUTCOME_OK,
        );
        entry.target = Some(format!("{}/{}", applied.job.id, applied.job.version));
        db(&backend, move |db| db.append_audit(entry)).await?;
    }
    Ok(Json(applied.job))
}

async fn unpin(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<serde_json::Value> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    let current = backend.unpin(&id).await?;
    Ok(Json(json!({"job": id, "pinned": null, "current": current})))
}

async fn pins(State(backend): State<Backend>) -> ApiResult<Vec<crate::db::Pin>> {
    Ok(Json(db(&backend, |db| db.pins()).await?))
}

async fn schedules(State(backend): State<Backend>) -> ApiResult<Vec<crate::manifest::Schedule>> {
    Ok(Json(backend.schedules().await?))
}

async fn apply_schedule(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Body(upload): Body<ScheduleUpload>,
) -> ApiResult<crate::manifest::Schedule> {
    scope::require_schedule_upload(&backend, &principal, &upload).await?;
    Ok(Json(
        backend.apply_schedule_as(&upload.yaml, &principal).await?,
    ))
}

async fn exec(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
    Body(request): Body<ExecRequest>,
) -> Result<(axum::http::StatusCode, Json<crate::db::ExecutionRow>), ApiError> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    let target = request.target();
    crate::auth::require_target(&principal, &target)?;
    let row = backend
        .exec_with(&id, &target, request.rollout.as_ref(), &principal)
        .await?;
    // 202: recorded, waiting for approvals, nothing published yet.
    let status = if row.status == crate::db::AWAITING_APPROVAL {
        axum::http::StatusCode::ACCEPTED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((status, Json(row)))
}

async fn revoke(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<serde_json::Value> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    backend.revoke(&id).await?;
    Ok(Json(json!({"job": id, "status": "REVOKED"})))
}

async fn activate(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<serde_json::Value> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    backend.activate(&id).await?;
    Ok(Json(json!({"job": id, "status": "ACTIVE"})))
}

async fn pin(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
    Body(request): Body<PinRequest>,
) -> ApiResult<serde_json::Value> {
    scope::require_job_by_id(&backend, &principal, &id).await?;
    backend.pin(&id, &request.version).await?;
    Ok(Json(json!({"job": id, "pinned": request.version})))
}

async fn executions(
    State(backend): State<Backend>,
    QueryParams(filter): QueryParams<crate::db::ExecutionFilter>,
) -> ApiResult<Vec<crate::db::ExecutionRow>> {
    Ok(Json(
        db(&backend, move |db| db.executions_matching(&filter)).await?,
    ))
}

async fn execution(
    State(backend): State<Backend>,
    PathParams(id): PathParams<String>,
    QueryParams(wait): QueryParams<ExecutionWait>,
) -> ApiResult<ExecutionAnswer> {
    let row = long_poll::execution(&backend, &id, &wait).await?;
    let fingerprint = row.fingerprint();
    let over = crate::execution_over(&row.status);
    Ok(Json(ExecutionAnswer {
        row,
        fingerprint,
        over,
    }))
}

async fn results(
    State(backend): State<Backend>,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<ResultsQuery>,
) -> ApiResult<Vec<crate::db::ResultRow>> {
    let lookup = id.clone();
    if db(&backend, move |db| db.execution(&lookup))
        .await?
        .is_none()
    {
        return Err(BackendError::NotFound(format!("execution {id}")).into());
    }
    let with_output = query.output.unwrap_or(true);
    Ok(Json(
        db(&backend, move |db| {
            db.results_matching(&id, query.pc.as_deref(), with_output)
        })
        .await?,
    ))
}

async fn preview(
    State(backend): State<Backend>,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<PreviewQuery>,
) -> ApiResult<Vec<String>> {
    let schedule = backend.schedule(&id).await?;
    let times = crate::schedule::preview(&schedule, chrono::Utc::now(), query.n.min(100))
        .map_err(BackendError::from)?;
    Ok(Json(times.into_iter().map(|t| t.to_rfc3339()).collect()))
}

async fn enable(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<crate::manifest::Schedule> {
    scope::require_schedule(&backend, &principal, &id).await?;
    Ok(Json(backend.set_schedule_enabled(&id, true).await?))
}

async fn disable(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<crate::manifest::Schedule> {
    scope::require_schedule(&backend, &principal, &id).await?;
    Ok(Json(backend.set_schedule_enabled(&id, false).await?))
}

async fn freeze_status(State(backend): State<Backend>) -> ApiResult<Option<crate::db::Freeze>> {
    Ok(Json(db(&backend, |db| db.freeze()).await?))
}

async fn freeze_set(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    Body(request): Body<FreezeRequest>,
) -> ApiResult<Option<crate::db::Freeze>> {
    scope::require_unscoped(&principal, "the freeze")?;
    let until = match &request.until {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    BackendError::Invalid(format!("until: {text:?} is not RFC 3339: {e}"))
                })?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let reason = request.reason.clone();
    db(&backend, move |db| db.set_freeze(until, reason.as_deref())).await?;
    backend.publish_freeze().await?;
    Ok(Json(db(&backend, |db| db.freeze()).await?))
}

async fn freeze_clear(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Option<crate::db::Freeze>> {
    scope::require_unscoped(&principal, "the freeze")?;
    db(&backend, |db| db.clear_freeze()).await?;
    backend.publish_freeze().await?;
    Ok(Json(None))
}

async fn kill(
    State(backend): State<Backend>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
) -> ApiResult<serde_json::Value> {
    scope::require_execution(&backend, &principal, &id).await?;
    Ok(Json(match backend.kill(&id).await? {
        crate::backend::KillOutcome::Killed => {
            json!({"execution": id, "status": "cancelled", "killed": true})
        }
        crate::backend::KillOutcome::AlreadyFinished { status } => json!({
            "execution": id,
            "status": status,
            "killed": false,
            "message": format!("execution {id} had already finished ({status}); its status is unchanged"),
        }),
    }))
}
