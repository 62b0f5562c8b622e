//! Helpers shared by the backend's HTTP tests.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part

use kanade_backend::{http, Backend};

/// Serves the API over `backend` on an ephemeral port, without
/// authentication (tests/security_*.rs cover that); returns its base URL.
pub async fn serve(backend: Backend) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let auth = http::ApiAuth {
            insecure_no_auth: true,
            ..http::ApiAuth::default()
        };
        axum::serve(listener, http::router_with(backend, auth))
            .await
            .unwrap();
    });
    format!("http://{address}")
}
