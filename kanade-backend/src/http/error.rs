//! How the API answers a failed request: [`ApiError`], and
//! [`error_response`], the pure mapping from an error to its status and
//! JSON body `{"error": …, "details": …}`.
//!
//! | error | status |
//! |---|---|
//! | [`BackendError::Manifest`] | 422, `details`: the problems with field and line |
//! | [`BackendError::NotFound`], [`ApiError::NoRoute`] | 404 |
//! | [`BackendError::Invalid`], [`BackendError::When`], [`BackendError::Token`] | 400 |
//! | [`ApiError::Request`] (unreadable body, query or path) | its own 4xx (400, 413, 415, 422) |
//! | [`ApiError::MethodNotAllowed`] | 405 |
//! | [`ApiError::Unauthenticated`] (with `WWW-Authenticate: Bearer`) | 401 |
//! | [`ApiError::Forbidden`], [`BackendError::Denied`] | 403 |
//! | [`BackendError::Transport`], [`BackendError::Db`], [`BackendError::DbTask`], [`BackendError::Encode`], [`BackendError::Corrupt`], [`BackendError::Internal`], a reader's own 5xx | 500 |
//!
//! A 500 answers with what failed in general terms only (`internal error:
//! the database failed …`): the full error, which may name tables, paths
//! or servers, goes to the backend's log, not to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::BackendError;

/// A handler's answer: JSON, or the error body.
pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The backend refused the request or failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The request could not be read: a malformed JSON body, query or path.
    #[error("{message}")]
    Request {
        /// The status the reader chose (a 4xx).
        status: StatusCode,
        /// What is wrong with the request.
        message: String,
    },
    /// No route has this path.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// No credential, or one that does not authenticate anyone (401). The
    /// message says which, never which credentials exist.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is authenticated but may not do this (403).
    #[error("{0}")]
    Forbidden(#[from] crate::auth::Denial),
    /// The route exists, but not with this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::Request {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Request {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Request {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

/// The JSON body of every error answer.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in one line.
    pub error: String,
    /// Structured detail (the manifest problems for a 422), else `null`.
    pub details: Value,
}

/// The status and body the API answers `error` with. Pure: the same error
/// always maps to the same answer, and nothing is logged or sent.
pub fn error_response(error: &ApiError) -> (StatusCode, ErrorBody) {
    let (status, details) = match error {
        ApiError::Backend(backend) => match backend {
            BackendError::Manifest(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, json!(errors.errors))
            }
            BackendError::NotFound(_) => (StatusCode::NOT_FOUND, Value::Null),
            BackendError::Denied(_) => (StatusCode::FORBIDDEN, Value::Null),
            BackendError::Invalid(_) | BackendError::When(_) | BackendError::Token(_) => {
                (StatusCode::BAD_REQUEST, Value::Null)
            }
            BackendError::Transport(_)
            | BackendError::Db(_)
            | BackendError::DbTask(_)
            | BackendError::Encode(_)
            | BackendError::Corrupt { .. }
            | BackendError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, Value::Null),
        },
        // A reader's 4xx is the client's fault; a 5xx (a route without the
        // path parameters its handler reads) is ours.
        ApiError::Request { status, .. } if status.is_client_error() => (*status, Value::Null),
        ApiError::Request { .. } => (StatusCode::INTERNAL_SERVER_ERROR, Value::Null),
        ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, Value::Null),
        ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, Value::Null),
        ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, Value::Null),
        ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, Value::Null),
    };
    let message = if status.is_server_error() {
        internal_summary(error).to_owned()
    } else {
        error.to_string()
    };
    (
        status,
        ErrorBody {
            error: message,
            details,
        },
    )
}

/// What a 500 tells the client: which part failed, nothing more.
fn internal_summary(error: &ApiError) -> &'static str {
    match error {
        ApiError::Backend(BackendError::Transport(_)) => {
            "internal error: the message transport failed (details in the backend log)"
        }
        ApiError::Backend(BackendError::Db(_) | BackendError::DbTask(_)) => {
            "internal error: the database failed (details in the backend log)"
        }
        ApiError::Backend(BackendError::Corrupt { .. }) => {
            "internal error: a stored record is unreadable (details in the backend log)"
        }
        _ => "internal error (details in the backend log)",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = error_response(&self);
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "API request failed: {self}");
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer")];
            return (status, challenge, Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

impl IntoResponse for BackendError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kanade_core::names::SubjectToken;
    use kanade_core::transport::TransportError;

    use super::*;
    use crate::db::DbError;
    use crate::manifest::parse_job;
    use crate::when::{lower, When};

    fn status_of(error: impl Into<ApiError>) -> StatusCode {
        let error = error.into();
        let (status, body) = error_response(&error);
        if status.is_client_error() {
            assert_eq!(body.error, error.to_string(), "the body says what failed");
        }
        status
    }

    fn json_error() -> serde_json::Error {
        serde_json::from_str::<u8>("x").unwrap_err()
    }

    #[test]
    fn bad_manifests_answer_422_with_their_problems() {
        let errors = parse_job(
            "id: x\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: soon\n",
            &BTreeMap::new(),
        )
        .unwrap_err();
        let (status, body) = error_response(&BackendError::from(errors).into());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body.details[0]["field"], "execute.timeout");
        assert_eq!(body.details[0]["line"], 6);
        assert!(body
            .error
            .starts_with("invalid manifest: line 6: execute.timeout"));
    }

    #[test]
    fn bad_input_answers_4xx() {
        assert_eq!(
            status_of(BackendError::NotFound("job x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(BackendError::Invalid("the target names no agents".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(BackendError::from(lower(&When::default()).unwrap_err())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(BackendError::from(
                SubjectToken::pc(String::new()).unwrap_err()
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ApiError::Request {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "no JSON content type".into()
            }),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status_of(ApiError::Request {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "missing path parameters".into()
            }),
            StatusCode::INTERNAL_SERVER_ERROR,
            "a reader's own 5xx is the backend's fault"
        );
        assert_eq!(
            status_of(ApiError::NoRoute("/api/nowhere".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(ApiError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/api/jobs".into()
            }),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn internal_failures_answer_500() {
        let cancelled = {
            let task = tokio::spawn(std::future::pending::<()>());
            task.abort();
            task.await.unwrap_err()
        };
        let internal = [
            BackendError::Transport(TransportError::Disconnected("broker away".into())),
            BackendError::Db(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)),
            BackendError::DbTask(cancelled),
            BackendError::Encode(json_error()),
            BackendError::Corrupt {
                what: "job x".into(),
                source: json_error(),
            },
            BackendError::Internal("job x has no stored script".into()),
        ];
        for error in internal {
            assert!(error.is_internal(), "{error}");
            let full = error.to_string();
            let (status, body) = error_response(&error.into());
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body.details, Value::Null);
            assert!(body.error.starts_with("internal error"), "{}", body.error);
            assert_ne!(body.error, full, "the internal detail stays in the log");
        }
        let (_, body) = error_response(
            &BackendError::Transport(TransportError::Disconnected("nats://10.0.0.7".into())).into(),
        );
        assert!(!body.error.contains("10.0.0.7"), "{}", body.error);
        assert!(body.error.contains("transport"), "{}", body.error);
    }

    #[test]
    fn the_body_is_error_and_details() {
        let (_, body) = error_response(&BackendError::NotFound("job x".into()).into());
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": "job x not found", "details": null})
        );
    }
}
