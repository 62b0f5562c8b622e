//! `kanade-agent`: runs the kanade agent on this endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use kanade_agent::{Agent, AgentSettings, FileConfig};
use kanade_core::names::SubjectToken;
use kanade_core::transport::Transport;
use kanade_transport_nats::ConnectionState;
use tokio::sync::watch;

/// The version this binary reports, in a fixed slot: the marker, the
/// crate version, NUL padding. A test makes a "different build" by
/// patching the version in a copy of the binary (same length slot, so the
/// file stays valid) instead of compiling twice.
#[used]
static VERSION_SLOT: [u8; VERSION_SLOT_LEN] = version_slot(env!("CARGO_PKG_VERSION"));

/// `KANADE-AGENT-VERSION:` — what precedes the version in the slot.
const VERSION_MARKER: &[u8] = b"KANADE-AGENT-VERSION:";
const VERSION_SLOT_LEN: usize = 64;

const fn version_slot(version: &str) -> [u8; VERSION_SLOT_LEN] {
    let mut slot = [0u8; VERSION_SLOT_LEN];
    let mut i = 0;
    while i < VERSION_MARKER.len() {
        slot[i] = VERSION_MARKER[i];
        i += 1;
    }
    let version = version.as_bytes();
    let mut j = 0;
    while j < version.len() && i + j < VERSION_SLOT_LEN {
        slot[i + j] = version[j];
        j += 1;
    }
    slot
}

/// The version in [`VERSION_SLOT`] (read at run time, so a patched copy
/// reports its own).
fn agent_version() -> String {
    let slot = std::hint::black_box(&VERSION_SLOT);
    let rest = &slot[VERSION_MARKER.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The boot sentinel, run by the service manager before each start
    /// from the `.last-good` binary (see packaging/kanade-agent.service):
    /// counts the starts of a newly installed version and, after 3 that
    /// never confirmed a healthy start, restores the previous binary and
    /// quarantines the version on this host. Exits 0 unless a record or
    /// the binary cannot be written.
    BootCheck {
        /// The agent executable the service starts (the one an update
        /// replaced).
        #[arg(long)]
        executable: PathBuf,
    },
}

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
    #[command(subcommand)]
    command: Option<Sub>,
    /// Never self-update (by default the agent follows `target_version`
    /// from the agent config and installs releases that verify against
    /// its command-key ring; without a ring it installs nothing).
    #[arg(long)]
    no_self_update: bool,
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
    /// Serve the agent's metrics (Prometheus / OpenMetrics text) at
    /// `GET /metrics` on this address, e.g. `127.0.0.1:9464`. Off unless
    /// given; they hold counts and times, no command or output.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
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

async fn run(args: Args) -> Result<kanade_agent::Stopped, String> {
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
    settings.agent_version = agent_version();
    // Windows refuses to rename over a running executable: no self-update
    // there yet (README, "Updating agents").
    if !args.no_self_update && cfg!(unix) {
        settings.self_update =
            std::env::current_exe()
                .ok()
                .map(|executable| kanade_agent::update::SelfUpdate {
                    executable,
                    platform: kanade_core::policy::release::platform(),
                });
    }
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
    if let Some(listen) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("--metrics-listen {listen}: {e}"))?;
        tracing::info!(%listen, "serving metrics at /metrics");
        tokio::spawn(serve_metrics(listener, agent.clone()));
    }
    tracing::info!(pc_id = %pc_id, version = agent_version(), transport = kanade_core::transport::url::redact(&transport_spec), state_dir = %state_dir.display(), "kanade-agent started");
    let stopped = agent
        .run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(?stopped, "kanade-agent stopped");
    Ok(stopped)
}

/// Serves `GET /metrics` (the agent's OpenMetrics text) on `listener`;
/// anything else is a 404 saying what is served.
async fn serve_metrics(listener: tokio::net::TcpListener, agent: kanade_agent::Agent) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let agent = agent.clone();
                    async move {
                        let response = if request.uri().path() == "/metrics"
                            && request.method() == hyper::Method::GET
                        {
                            hyper::Response::builder()
                                .header("content-type", kanade_agent::metrics::CONTENT_TYPE)
                                .body(Full::new(Bytes::from(agent.metrics_text())))
                        } else {
                            hyper::Response::builder()
                                .status(hyper::StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(
                                    b"not found: the agent serves GET /metrics\n",
                                )))
                        };
                        Ok::<_, std::convert::Infallible>(
                            response.unwrap_or_else(|_| hyper::Response::new(Full::default())),
                        )
                    }
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that never finishes its request is dropped.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, service)
                .await;
        });
    }
}

/// `kanade-agent boot-check`: the state directory from the flags or the
/// config file, as for a run.
fn boot_check(args: &Args, executable: &std::path::Path) -> ExitCode {
    // Only `state_dir` is read, leniently: the sentinel runs from the
    // previous binary, which may not know keys a newer config has.
    let state_dir = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))
            .and_then(|text| {
                text.parse::<toml::Table>()
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .map(|table| {
                table
                    .get("state_dir")
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from)
            }),
        None => Ok(None),
    };
    let state_dir = match state_dir {
        Ok(from_file) => args
            .state_dir
            .clone()
            .or(from_file)
            .unwrap_or_else(|| PathBuf::from("kanade-agent-state")),
        Err(e) => {
            eprintln!("kanade-agent boot-check: {e}");
            return ExitCode::from(2);
        }
    };
    match kanade_agent::update::boot_check(&state_dir, executable) {
        Ok(kanade_agent::update::BootCheck::NothingPending) => ExitCode::SUCCESS,
        Ok(kanade_agent::update::BootCheck::Starting { version, boots }) => {
            eprintln!(
                "kanade-agent boot-check: starting {version}, start {boots} of {} before a rollback",
                kanade_core::policy::release::MAX_FAILED_BOOTS
            );
            ExitCode::SUCCESS
        }
        Ok(kanade_agent::update::BootCheck::RolledBack { version, previous }) => {
            eprintln!(
                "kanade-agent boot-check: {version} never started healthy; restored {previous} and quarantined {version} on this host"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kanade-agent boot-check: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::BootCheck { executable }) = &args.command {
        return boot_check(&args, executable);
    }
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
        Ok(kanade_agent::Stopped::Updated { .. }) => {
            ExitCode::from(kanade_core::policy::release::EXIT_UPDATED)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kanade-agent: {e}");
            ExitCode::from(2)
        }
    }
}
