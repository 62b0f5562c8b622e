//! The HTTP API (JSON). Errors come back as `{"error": …, "details": …}`
//! with a fitting status code.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::manifest::Target;
use crate::{Backend, BackendError};

impl IntoResponse for BackendError {
    fn into_response(self) -> Response {
        let (status, details) = match &self {
            BackendError::Manifest(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, json!(errors.errors))
            }
            BackendError::NotFound(_) => (StatusCode::NOT_FOUND, json!(null)),
            BackendError::Invalid(_) => (StatusCode::BAD_REQUEST, json!(null)),
            BackendError::Transport(_) => (StatusCode::SERVICE_UNAVAILABLE, json!(null)),
            BackendError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, json!(null)),
        };
        (
            status,
            Json(json!({"error": self.to_string(), "details": details})),
        )
            .into_response()
    }
}

/// A job upload: the YAML, plus any `script_file` bodies it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobUpload {
    /// The manifest, verbatim.
    pub yaml: String,
    /// `script_file` name → body.
    #[serde(default)]
    pub script_files: BTreeMap<String, String>,
}

/// A schedule upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleUpload {
    /// The manifest, verbatim.
    pub yaml: String,
}

/// `POST /api/jobs/{id}/pin` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    /// The version agents may run.
    pub version: String,
}

type ApiResult<T> = Result<Json<T>, BackendError>;

/// The API's routes over `backend`.
pub fn router(backend: Backend) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/api/agents", get(agents))
        .route("/api/jobs", get(jobs).post(apply_job))
        .route("/api/schedules", get(schedules).post(apply_schedule))
        .route("/api/jobs/{id}/exec", post(exec))
        .route("/api/jobs/{id}/revoke", post(revoke))
        .route("/api/jobs/{id}/activate", post(activate))
        .route("/api/jobs/{id}/pin", post(pin))
        .route("/api/executions", get(executions))
        .route("/api/executions/{id}", get(execution))
        .route("/api/executions/{id}/results", get(results))
        .route("/api/executions/{id}/kill", post(kill))
        .with_state(backend)
}

async fn db<T: Send + 'static>(
    backend: &Backend,
    work: impl FnOnce(&crate::db::Db) -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, BackendError> {
    let db = backend.db().clone();
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(|e| BackendError::Invalid(e.to_string()))?
        .map_err(BackendError::from)
}

async fn agents(State(backend): State<Backend>) -> ApiResult<Vec<crate::db::AgentRow>> {
    let since = backend.online_since();
    Ok(Json(db(&backend, move |db| db.agents(since)).await?))
}

async fn jobs(State(backend): State<Backend>) -> ApiResult<Vec<crate::manifest::Job>> {
    Ok(Json(backend.jobs().await?))
}

async fn apply_job(
    State(backend): State<Backend>,
    Json(upload): Json<JobUpload>,
) -> ApiResult<crate::manifest::Job> {
    Ok(Json(
        backend
            .apply_job(&upload.yaml, &upload.script_files)
            .await?,
    ))
}

async fn schedules(State(backend): State<Backend>) -> ApiResult<Vec<crate::manifest::Schedule>> {
    Ok(Json(backend.schedules().await?))
}

async fn apply_schedule(
    State(backend): State<Backend>,
    Json(upload): Json<ScheduleUpload>,
) -> ApiResult<crate::manifest::Schedule> {
    Ok(Json(backend.apply_schedule(&upload.yaml).await?))
}

async fn exec(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Json(target): Json<Target>,
) -> ApiResult<crate::db::ExecutionRow> {
    Ok(Json(backend.exec(&id, &target).await?))
}

async fn revoke(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    backend.revoke(&id).await?;
    Ok(Json(json!({"job": id, "status": "REVOKED"})))
}

async fn activate(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    backend.activate(&id).await?;
    Ok(Json(json!({"job": id, "status": "ACTIVE"})))
}

async fn pin(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Json(request): Json<PinRequest>,
) -> ApiResult<serde_json::Value> {
    backend.pin(&id, &request.version).await?;
    Ok(Json(json!({"job": id, "pinned": request.version})))
}

async fn executions(State(backend): State<Backend>) -> ApiResult<Vec<crate::db::ExecutionRow>> {
    Ok(Json(db(&backend, |db| db.executions()).await?))
}

async fn execution(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<crate::db::ExecutionRow> {
    let lookup = id.clone();
    db(&backend, move |db| db.execution(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| BackendError::NotFound(format!("execution {id}")))
}

async fn results(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<Vec<crate::db::ResultRow>> {
    Ok(Json(db(&backend, move |db| db.results(&id)).await?))
}

async fn kill(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    backend.kill(&id).await?;
    Ok(Json(json!({"execution": id, "status": "cancelled"})))
}
