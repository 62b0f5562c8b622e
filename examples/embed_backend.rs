//! The backend library inside your own axum app: kanade's HTTP API mounted
//! under `/kanade`, next to a route of the app's own (`/hello`), on one
//! listener. The backend's projectors and scheduler run as tasks of the
//! same program.
//!
//! Every `/api` route needs a bearer credential: the example creates an
//! admin API token in the backend's database (shown once, stored as a
//! hash), as `kanade-backend token create` does.
//!
//! It starts on a free loopback port, calls both routes once and exits;
//! `--serve` keeps it serving until Ctrl-C. The transport is in-memory
//! unless `NATS_URL` names a server.
//!
//! ```text
//! cargo run --example embed_backend
//! cargo run --example embed_backend -- --serve
//! ```

use axum::routing::get;
use axum::Router;
use kanade::backend::auth::Role;
use kanade::backend::db::NewToken;
use kanade::backend::{http, Backend, BackendSettings, Scheduler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

const JOB: &str =
    "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hello\n  timeout: 30s\n";

/// One HTTP/1.1 GET over a plain TCP connection (no client library needed).
async fn get_text(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<String, Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(format!("{status}  {body}"))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "memory".into());
    let transport = kanade::transport::open(&url).await?;
    let dir = tempfile::tempdir()?;
    let backend = Backend::open(
        transport,
        BackendSettings::new(dir.path().join("kanade.db")),
    )
    .await?;
    backend.apply_job(JOB, &Default::default()).await?;
    let new_token = NewToken {
        name: "example-admin".into(),
        role: Role::Admin,
        scopes: Default::default(),
        expires_at: None,
    };
    let (_, token) = backend
        .db()
        .create_token(&new_token, "embed_backend", chrono::Utc::now())?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let projectors = tokio::spawn(backend.clone().run(wait_stop(stopped.clone())));
    let scheduler = tokio::spawn(Scheduler::new(backend.clone()).run(wait_stop(stopped.clone())));

    // The user's app: its own route, and kanade's API under /kanade.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the host app\n" }))
        .nest("/kanade", http::router(backend.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr} (kanade under /kanade)");
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(wait_stop(stopped))
            .await
    });

    for (path, token) in [
        ("/hello", None),
        ("/kanade/healthz", None),
        ("/kanade/api/jobs", None),
        ("/kanade/api/jobs", Some(token.as_str())),
    ] {
        let with = if token.is_some() {
            " (with the token)"
        } else {
            ""
        };
        println!(
            "GET {path}{with}\n  {}",
            get_text(addr, path, token).await?.trim_end()
        );
    }
    if serve {
        println!("--serve: Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }

    let _ = stop.send(true);
    server.await??;
    projectors.await??;
    scheduler.await?;
    Ok(())
}
