//! `kanade-backend`: provisions the transport, runs the projectors and the
//! scheduler, and serves the HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kanade_backend::{http, Backend, BackendSettings};
use kanade_core::transport::Transport;
use kanade_transport_nats::provision::provision;

/// Runs the kanade backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `memory`, `file:<dir>` or `nats://host:port[,…]`.
    #[arg(long, env = "KANADE_TRANSPORT", default_value = "memory")]
    transport: String,
    /// SQLite database file.
    #[arg(long, default_value = "kanade-backend.db")]
    db: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

async fn open_transport(spec: &str) -> Result<Arc<dyn Transport>, String> {
    let opened = kanade_transport_nats::open_with(spec, |options| {
        options.name = Some("kanade-backend".into());
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(nats) = &opened.nats {
        let report = provision(nats).await.map_err(|e| e.to_string())?;
        tracing::info!(created = ?report.created, updated = ?report.updated, "provisioned");
    }
    Ok(opened.transport)
}

async fn run(args: Args) -> Result<(), String> {
    let transport = open_transport(&args.transport).await?;
    let backend = Backend::open(transport, BackendSettings::new(&args.db))
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    eprintln!(
        "kanade-backend: API on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let projectors = tokio::spawn(backend.clone().run(std::future::pending()));
    let scheduler =
        tokio::spawn(kanade_backend::Scheduler::new(backend.clone()).run(std::future::pending()));
    axum::serve(listener, http::router(backend))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())?;
    projectors.abort();
    scheduler.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let level = ["warn", "info", "debug"][usize::from(args.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kanade-backend: {e}");
            ExitCode::from(2)
        }
    }
}
