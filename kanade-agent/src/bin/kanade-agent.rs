//! `kanade-agent`: runs the kanade agent on this endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use kanade_agent::{Agent, AgentSettings, FileConfig};
use kanade_core::names::SubjectToken;
use kanade_core::transport::Transport;
use kanade_transport_nats::ConnectionState;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs the kanade agent on this endpoint: receives commands from the
/// backend over NATS (or a shared file transport), runs their scripts
/// safely and reports results. Needs --transport (or `transport` in
/// --config).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (see the kanade-agent docs for the keys); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `nats://host:port[,nats://…]` or `file:<dir>` (required, here or in
    /// --config; `memory` runs the agent alone, for trying it out).
    #[arg(long, env = "KANADE_TRANSPORT")]
    transport: Option<String>,
    /// This endpoint's id (default: the host name).
    #[arg(long)]
    pc_id: Option<String>,
    /// Group to join (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Where the ledger, outbox and script cache live.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Do not replay the EXEC stream on start.
    #[arg(long)]
    no_replay: bool,
    /// This agent's NATS NKey seed file (`kanade-backend nats-auth` writes
    /// one per agent; mode 0600).
    #[arg(long, env = "KANADE_NATS_NKEY")]
    nats_nkey: Option<PathBuf>,
    /// CA certificate (PEM) the NATS servers' certificates chain to; with
    /// it, TLS is required.
    #[arg(long, env = "KANADE_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients.
    #[arg(long, env = "KANADE_NATS_CERT", requires = "nats_key")]
    nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "KANADE_NATS_KEY", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
    /// The command-key ring (JSON array of {kid, public_key, label?,
    /// max_age_secs?}; must not be writable by group or others).
    #[arg(long)]
    command_keys: Option<PathBuf>,
    /// off | observe | enforce (default off, or the config's [trust] mode).
    #[arg(long)]
    signature_mode: Option<kanade_agent::trust::SignatureMode>,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_logging(args: &Args) {
    let level = match args.verbose {
        // Connecting, subscriptions and failures show by default.
        0 => "info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Reads an NKey seed file, refusing one others can read.
fn read_seed(path: &std::path::Path) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("NKey seed {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "NKey seed {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let seed =
        std::fs::read_to_string(path).map_err(|e| format!("NKey seed {}: {e}", path.display()))?;
    Ok(seed.trim().to_owned())
}

async fn open_transport(
    spec: &str,
    pc_id: &SubjectToken,
    nkey: Option<String>,
    tls: kanade_transport_nats::TlsOptions,
) -> Result<(Arc<dyn Transport>, Option<watch::Receiver<bool>>), String> {
    let opened = kanade_transport_nats::open_with(spec, |options| {
        // Named after the PC so a server's monitoring (`/connz`) shows
        // which endpoint each connection is.
        options.name = Some(format!("kanade-agent {}", pc_id.as_str()));
        options.retry_on_initial_connect = true;
        if let Some(seed) = nkey {
            options.auth = kanade_transport_nats::Auth::NKey(seed);
            // The generated authorization lets this identity receive
            // replies on its own prefix only.
            options.inbox_prefix = Some(kanade_core::names::subjects::agent_inbox_prefix(pc_id));
        }
        options.tls = tls;
    })
    .await
    .map_err(|e| e.to_string())?;
    let Some(nats) = opened.nats else {
        return Ok((opened.transport, None));
    };
    let mut state = nats.connection_state();
    let (tx, rx) = watch::channel(*state.borrow() == ConnectionState::Connected);
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let _ = tx.send(*state.borrow() == ConnectionState::Connected);
        }
    });
    Ok((opened.transport, Some(rx)))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let pc_id = match args.pc_id.clone().or(file.pc_id.clone()) {
        Some(id) => id,
        None => hostname::get()
            .map_err(|e| format!("cannot read the host name (use --pc-id): {e}"))?
            .to_string_lossy()
            .into_owned(),
    };
    let pc_id = SubjectToken::pc(pc_id).map_err(|e| format!("{e} (use --pc-id)"))?;
    let groups = if args.groups.is_empty() {
        file.groups.clone()
    } else {
        args.groups.clone()
    };
    let groups = groups
        .into_iter()
        .map(SubjectToken::group)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let state_dir = args
        .state_dir
        .clone()
        .or(file.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("kanade-agent-state"));
    // No silent default: an agent alone on an in-memory bus reaches no one.
    let transport_spec = args.transport.clone().or(file.transport.clone()).ok_or(
        "no transport: give --transport nats://host:4222 (or `transport = \"nats://…\"` in \
             --config); `--transport memory` runs the agent alone, for trying it out",
    )?;
    if transport_spec == "memory" {
        tracing::warn!("transport memory: this agent is alone; no backend can reach it");
    }
    let nkey = match &args.nats_nkey {
        Some(path) => Some(read_seed(path)?),
        None => None,
    };
    let tls = kanade_transport_nats::TlsOptions {
        required: args.nats_ca.is_some() || args.nats_cert.is_some(),
        root_certificates: args.nats_ca.clone(),
        client_certificate: args.nats_cert.clone().zip(args.nats_key.clone()),
    };
    let publisher_signer = nkey
        .as_deref()
        .map(kanade_core::policy::publisher::PublisherSigner::from_seed)
        .transpose()
        .map_err(|e| format!("NKey seed: {e}"))?;
    let (transport, connected) = open_transport(&transport_spec, &pc_id, nkey, tls).await?;
    let mut settings = AgentSettings::new(pc_id.clone(), &state_dir);
    settings.groups = groups;
    settings.replay = !args.no_replay && file.replay.unwrap_or(true);
    // Results carry a proof of this identity (the backend checks it with
    // `--agent-identities`).
    settings.publisher_signer = publisher_signer;
    let trust_file = file.trust.clone().unwrap_or_default();
    settings.trust.keys_file = args.command_keys.clone().or(trust_file.keys);
    settings.trust.mode = args.signature_mode.or(trust_file.mode).unwrap_or_default();
    let mut builder = Agent::builder(settings, transport);
    if let Some(connected) = connected {
        builder = builder.connection_state(connected);
    }
    let agent = builder.build().map_err(|e| e.to_string())?;
    tracing::info!(pc_id = %pc_id, transport = kanade_core::transport::url::redact(&transport_spec), state_dir = %state_dir.display(), "kanade-agent started");
    agent
        .run(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("kanade-agent stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    // One thread runs the agent: its work is waiting (on the broker, on
    // scripts, which are processes of their own), and every worker thread
    // of a multi-threaded runtime — one per core, sixteen on a big host —
    // costs resident memory on every endpoint. Blocking work (fsyncs of
    // the ledger and outbox) goes to a small blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kanade-agent: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kanade-agent: {e}");
            ExitCode::from(2)
        }
    }
}
