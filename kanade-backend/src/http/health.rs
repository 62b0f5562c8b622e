//! Health for load balancers and Kubernetes, and the metrics scrape.
//!
//! - `GET /healthz` (open): the process answers; also whether commands go
//!   out signed and results are verified.
//! - `GET /readyz` (open): 200 when the database answers, the broker
//!   answers, the results projector is caught up (at most
//!   [`READY_MAX_LAG`] results behind) and a command-signing key is
//!   loaded; 503 otherwise. The body names each check and why it failed,
//!   and nothing else (no fleet data).
//! - `GET /metrics` (viewer token, like every fleet read): Prometheus /
//!   OpenMetrics text, see [`crate::metrics`].

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::blocking::db;
use crate::metrics::{FleetFigures, CONTENT_TYPE};
use crate::Backend;

/// The most results the projector may be behind and still be ready.
pub const READY_MAX_LAG: u64 = 1000;

/// How long the database ping waits for a busy connection.
const PING_PATIENCE: Duration = Duration::from_secs(2);

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One readiness check.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// It passed.
    pub ok: bool,
    /// Why it failed, or what it saw.
    pub detail: String,
}

/// `GET /readyz`'s body.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Every check passed.
    pub ready: bool,
    /// The database answers.
    pub database: Check,
    /// The broker answers.
    pub broker: Check,
    /// The results projector is caught up.
    pub projectors: Check,
    /// A command-signing key is loaded.
    pub signing_key: Check,
}

fn check(ok: bool, detail: impl Into<String>) -> Check {
    Check {
        ok,
        detail: detail.into(),
    }
}

async fn within<T, E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// The readiness checks, run now and side by side (the answer takes at
/// most [`CHECK_TIMEOUT`]). A failure says which check and why in a fixed
/// sentence; the underlying error goes to the log, not to this open
/// endpoint.
pub async fn readiness(backend: &Backend) -> Readiness {
    let (database, broker, lag) = tokio::join!(
        within(db(backend, |db| db.ping(PING_PATIENCE))),
        within(backend.broker_answers()),
        within(backend.results_lag()),
    );
    let database = match database {
        Ok(()) => check(true, "answers"),
        Err(e) => {
            tracing::warn!("readiness: database: {e}");
            check(
                false,
                "the database does not answer (see the backend's log)",
            )
        }
    };
    let broker = match broker {
        Ok(()) => check(true, "answers"),
        Err(e) => {
            tracing::warn!("readiness: broker: {e}");
            check(false, "the broker does not answer (see the backend's log)")
        }
    };
    let projectors = match lag {
        Ok(Some(lag)) if lag <= READY_MAX_LAG => check(true, format!("{lag} results behind")),
        Ok(Some(lag)) => check(
            false,
            format!("{lag} results behind (ready at {READY_MAX_LAG} or fewer)"),
        ),
        Ok(None) => check(true, "this transport does not report a lag"),
        Err(e) => {
            tracing::warn!("readiness: results projector: {e}");
            check(false, "the results projector is not running yet")
        }
    };
    let signing_key = if backend.signing() {
        check(true, "loaded")
    } else {
        check(
            false,
            "no command-signing key: start with --signing-key (enforcing agents refuse unsigned commands)",
        )
    };
    Readiness {
        ready: database.ok && broker.ok && projectors.ok && signing_key.ok,
        database,
        broker,
        projectors,
        signing_key,
    }
}

pub(super) async fn readyz(State(backend): State<Backend>) -> (StatusCode, Json<Readiness>) {
    let answer = readiness(&backend).await;
    let status = if answer.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(answer))
}

/// The figures `/metrics` reads from the store and the broker.
async fn figures(backend: &Backend) -> Result<FleetFigures, crate::BackendError> {
    let since = backend.online_since();
    let (known, online, executions, audit) = db(backend, move |db| {
        let (known, online) = db.agent_counts(since)?;
        Ok((known, online, db.execution_counts()?, db.audit_count()?))
    })
    .await?;
    let lag = within(backend.results_lag()).await.ok().flatten();
    Ok(FleetFigures {
        agents_known: known,
        agents_online: online,
        executions,
        projector_lag: lag.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        audit_entries: audit,
    })
}

pub(super) async fn metrics(State(backend): State<Backend>) -> Result<Response, super::ApiError> {
    let figures = figures(&backend).await?;
    let text = backend.metrics().render(&figures);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Counts every call by its matched route, method and status.
pub(super) async fn count_requests(
    State(backend): State<Backend>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    backend
        .metrics()
        .count_request(&route, &method, response.status().as_u16());
    response
}
