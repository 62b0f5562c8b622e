//! The guard in front of every `/api` route: it authenticates the caller
//! (an API token, or an OIDC JWT when an issuer is configured), checks the
//! route table's role (default deny), hands the [`Principal`] to the
//! handler, and records an audit entry for every state-changing call and
//! every refusal (401 / 403) with the caller, its address, the action, the
//! target and a digest of the parameters.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::routes::{changes_state, rule_for, RouteRule};
use crate::audit::PendingAudit;
use crate::auth::oidc::{looks_like_jwt, OidcVerifier};
use crate::auth::{require_role, Principal};
use crate::db::TOKEN_PREFIX;
use crate::Backend;

/// How the API authenticates callers.
#[derive(Clone, Default)]
pub struct ApiAuth {
    /// Verifies OIDC JWTs from the configured issuer (optional; API tokens
    /// always work).
    pub oidc: Option<Arc<OidcVerifier>>,
    /// Accept every call as an unrestricted admin named `insecure-no-auth`.
    /// For loopback demos only: the binary allows it only with a loopback
    /// listen address and warns at start. Calls are still audited.
    pub insecure_no_auth: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("oidc", &self.oidc.is_some())
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

/// The guard's state: the backend and how to authenticate.
#[derive(Clone)]
pub(super) struct GuardState {
    pub(super) backend: Backend,
    pub(super) auth: Arc<ApiAuth>,
}

/// Largest request body read: a job upload carries its script (up to the
/// manifest rule's 4 MiB), which JSON may grow up to six times (a control
/// byte becomes `\u001b`), so every script the manifest rules accept fits.
pub(super) const BODY_LIMIT: usize = super::routes::BODY_LIMIT;

/// The caller's bearer credential, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// Who the caller is, or why nobody: the 401 message (never naming which
/// tokens exist).
async fn authenticate(state: &GuardState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if state.auth.insecure_no_auth {
        return Ok(Principal::local("insecure-no-auth"));
    }
    let Some(credential) = bearer(headers) else {
        return Err(ApiError::Unauthenticated(
            "authentication required: send Authorization: Bearer <token> (kanade login, --token or KANADE_TOKEN)"
                .into(),
        ));
    };
    if credential.starts_with(TOKEN_PREFIX) {
        let db = state.backend.db().clone();
        let token = credential.to_owned();
        let now = state.backend.now();
        let checked = tokio::task::spawn_blocking(move || db.authenticate_token(&token, now))
            .await
            .map_err(|e| ApiError::Backend(crate::BackendError::DbTask(e)))?
            .map_err(|e| ApiError::Backend(e.into()))?;
        return checked.map_err(|rejection| ApiError::Unauthenticated(rejection.to_string()));
    }
    match &state.auth.oidc {
        Some(verifier) if looks_like_jwt(credential) => verifier
            .verify(credential)
            .map_err(|e| ApiError::Unauthenticated(format!("the OIDC token is not accepted: {e}"))),
        _ => Err(ApiError::Unauthenticated(
            "the credential is neither a kanade API token nor an accepted OIDC token".into(),
        )),
    }
}

/// The value of the route's `{…}` parameter (the job, execution, schedule
/// or token the call is about), read off the path by the rule's pattern.
fn target_of(rule: Option<&RouteRule>, path: &str) -> Option<String> {
    // Aligned from the end: a nested router's prefix comes first.
    let pattern = rule?.path;
    pattern
        .rsplit('/')
        .zip(path.rsplit('/'))
        .find(|(p, _)| p.starts_with('{'))
        .map(|(_, value)| value.to_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the audit trail says of an answer's status.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        202 => "pending",
        200..=299 => "ok",
        401 => "unauthenticated",
        403 => "denied",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// The middleware.
pub(super) async fn guard(
    State(state): State<GuardState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let rule = matched.as_ref().and_then(|m| rule_for(&method, m.as_str()));
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let kind = match parts.headers.get(axum::http::header::USER_AGENT) {
        Some(agent) if agent.as_bytes().starts_with(b"kanade-cli") => "cli",
        _ => "api",
    };
    let idempotency_key = parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut audit = AuditContext {
        backend: state.backend.clone(),
        action: rule.map_or("api.unlisted", |r| r.action).to_owned(),
        target: target_of(rule, uri.path()),
        ip,
        kind,
        idempotency_key,
        params: json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
        }),
    };

    // Authenticate from the headers alone: an anonymous caller's body is
    // never read.
    let principal = match authenticate(&state, &parts.headers).await {
        Ok(principal) => principal,
        Err(error) => {
            let response = error.into_response();
            audit.record("anonymous", response.status()).await;
            return response;
        }
    };
    // A route's larger limit (a release upload) only for a caller whose
    // role may call it: no one else makes the backend buffer that much.
    let limit = rule
        .filter(|r| principal.role >= r.role)
        .map_or(BODY_LIMIT, |r| r.body_limit);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::Request {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is over {limit} bytes"),
            }
            .into_response()
        }
    };
    audit.params["body"] = serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| {
        if bytes.is_empty() {
            Value::Null
        } else {
            json!({"sha256": sha256_hex(&bytes)})
        }
    });
    let Some(rule) = rule else {
        // Default deny: a route without a rule in the table.
        let response = ApiError::Forbidden(crate::auth::Denial::Approval(format!(
            "{} {} has no access rule; refused by default",
            method,
            uri.path()
        )))
        .into_response();
        audit.record(&principal.name, response.status()).await;
        return response;
    };
    if let Err(denial) = require_role(&principal, rule.role) {
        let response = ApiError::Forbidden(denial).into_response();
        audit.record(&principal.name, response.status()).await;
        return response;
    }
    let actor = principal.name.clone();
    let pending = PendingAudit::new(audit.draft(&actor, StatusCode::OK));
    parts.extensions.insert(principal);
    parts.extensions.insert(pending.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    // A handler whose change is a SQLite transaction recorded the entry in
    // it; everything else is recorded here.
    if (changes_state(method.as_str()) || status == StatusCode::FORBIDDEN) && !pending.recorded() {
        audit.record(&actor, status).await;
    }
    response
}

/// What the guard knows of a call for its audit entry.
struct AuditContext {
    backend: Backend,
    action: String,
    target: Option<String>,
    ip: Option<String>,
    kind: &'static str,
    idempotency_key: Option<String>,
    params: Value,
}

impl AuditContext {
    /// Appends the call's entry. A failure to record is logged, never
    /// turned into the caller's answer (the change already happened).
    async fn record(&self, actor: &str, status: StatusCode) {
        let draft = self.draft(actor, status);
        let db = self.backend.db().clone();
        let recorded = tokio::task::spawn_blocking(move || db.append_audit(draft)).await;
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(action = %self.action, "audit entry not recorded: {e}"),
            Err(e) => tracing::error!(action = %self.action, "audit entry not recorded: {e}"),
        }
    }

    /// The call's entry as `actor` answered with `status`. The id comes
    /// from the `Idempotency-Key` (with the actor and the action, so two
    /// callers' keys never collide).
    fn draft(&self, actor: &str, status: StatusCode) -> crate::audit::AuditDraft {
        crate::audit::AuditDraft {
            // A key names one request: the same key with other parameters
            // or another target is another entry, never hidden by the first.
            id: self.idempotency_key.as_ref().map(|key| {
                sha256_hex(
                    format!(
                        "{actor}\n{}\n{}\n{}\n{key}",
                        self.action,
                        self.target.as_deref().unwrap_or(""),
                        crate::audit::chain::params_sha256(&self.params)
                    )
                    .as_bytes(),
                )
            }),
            at: self.backend.now(),
            actor: actor.to_owned(),
            source: kanade_core::wire::AuditSource {
                ip: self.ip.clone(),
                kind: self.kind.to_owned(),
            },
            action: self.action.clone(),
            target: self.target.clone(),
            outcome: outcome(status).to_owned(),
            params: self.params.clone(),
            details: json!({"status": status.as_u16()}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn the_target_is_the_route_parameter() {
        let exec = rule_for(&axum::http::Method::POST, "/api/jobs/{id}/exec");
        assert_eq!(
            target_of(exec, "/api/jobs/patch/exec").as_deref(),
            Some("patch")
        );
        let list = rule_for(&axum::http::Method::GET, "/api/jobs");
        assert_eq!(target_of(list, "/api/jobs"), None);
        assert_eq!(
            target_of(exec, "/kanade/api/jobs/p2/exec").as_deref(),
            Some("p2")
        );
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(outcome(StatusCode::OK), "ok");
        assert_eq!(outcome(StatusCode::ACCEPTED), "pending");
        assert_eq!(outcome(StatusCode::UNAUTHORIZED), "unauthenticated");
        assert_eq!(outcome(StatusCode::FORBIDDEN), "denied");
        assert_eq!(outcome(StatusCode::UNPROCESSABLE_ENTITY), "refused");
        assert_eq!(outcome(StatusCode::INTERNAL_SERVER_ERROR), "failed");
    }
}
