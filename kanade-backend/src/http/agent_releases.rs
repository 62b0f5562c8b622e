//! Agent releases over HTTP (admin; see `crate::backend::agent_releases`):
//!
//! - `POST /api/agent-releases?version=V&platform=P` with the binary as
//!   the body (`application/octet-stream`, up to [`BODY_LIMIT`]): stored
//!   and signed; answers the [`ReleaseManifest`].
//! - `GET /api/agent-releases`: every published release.
//! - `POST /api/agent-rollout` `{version, all | groups | pcs, jitter?}`:
//!   sets `target_version`; answers the config keys written.
//! - `GET /api/agent-rollout` (viewer): the current rollout, halted or
//!   not, and why.
//! - `GET /api/agents/versions` (viewer): agents per version, and which
//!   hosts quarantined which version.

use axum::extract::State;
use axum::Json;
use kanade_core::policy::release::ReleaseManifest;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Body, QueryParams};
use crate::backend::{ReleaseListing, VersionSpread};
use crate::Backend;

/// Largest release binary accepted (the agent's own download limit).
pub const BODY_LIMIT: usize = 512 * 1024 * 1024;

/// `POST /api/agent-releases` query.
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishQuery {
    /// The version the binary reports.
    pub version: String,
    /// `<os>-<arch>`; default: the backend's own platform.
    pub platform: Option<String>,
}

/// `POST /api/agent-rollout` body.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The version agents should run.
    pub version: String,
    /// Every agent (the `global` scope).
    #[serde(default)]
    pub all: bool,
    /// These groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// These pcs.
    #[serde(default)]
    pub pcs: Vec<String>,
    /// Each agent waits a random time up to this before it installs
    /// (humantime; the config's default is 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Halt once this many hosts quarantined the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<u32>,
}

/// `POST /api/agent-rollout` answer.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct RolloutAnswer {
    /// The version set.
    pub version: String,
    /// The `agent_config` keys written.
    pub keys: Vec<String>,
}

pub(super) async fn publish(
    State(backend): State<Backend>,
    QueryParams(query): QueryParams<PublishQuery>,
    body: axum::body::Bytes,
) -> ApiResult<ReleaseManifest> {
    let platform = query
        .platform
        .unwrap_or_else(kanade_core::policy::release::platform);
    Ok(Json(
        backend
            .publish_release(&query.version, &platform, body)
            .await?,
    ))
}

pub(super) async fn list(State(backend): State<Backend>) -> ApiResult<Vec<ReleaseListing>> {
    Ok(Json(backend.releases().await?))
}

pub(super) async fn roll_out(
    State(backend): State<Backend>,
    Body(request): Body<RolloutRequest>,
) -> Result<Json<RolloutAnswer>, ApiError> {
    let target = crate::manifest::Target {
        all: request.all,
        groups: request.groups.clone(),
        pcs: request.pcs.clone(),
    };
    let keys = backend
        .roll_out_agents_with(
            &request.version,
            &target,
            request.jitter.as_deref(),
            request.max_errors,
        )
        .await?;
    Ok(Json(RolloutAnswer {
        version: request.version,
        keys,
    }))
}

pub(super) async fn status(
    State(backend): State<Backend>,
) -> ApiResult<Option<crate::db::AgentRolloutRow>> {
    Ok(Json(backend.agent_rollout().await?))
}

pub(super) async fn versions(State(backend): State<Backend>) -> ApiResult<VersionSpread> {
    Ok(Json(backend.agent_versions().await?))
}
