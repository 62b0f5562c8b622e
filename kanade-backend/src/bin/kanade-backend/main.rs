//! `kanade-backend`: provisions the transport, runs the projectors and the
//! scheduler, and serves the HTTP API, every `/api` route authenticated.
//! Offline subcommands manage API tokens and verify the audit trail
//! directly in the database file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kanade_backend::auth::oidc::{JwksSource, OidcConfig, OidcVerifier};
use kanade_backend::db::Db;
use kanade_backend::http::ApiAuth;
use kanade_backend::{http, Backend, BackendSettings};
use kanade_core::transport::Transport;
use kanade_transport_nats::provision::provision;

mod keys;
mod tls;

use keys::{keygen, newest_signer};
use tls::{serve_tls, tls_acceptor};

/// Runs the kanade backend: the HTTP API operators and `kanade` use, the
/// scheduler, and the projectors that store results, start events and
/// heartbeats in SQLite. Subcommands manage tokens, the audit trail, keys
/// and NATS identities offline.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// `memory`, `file:<dir>` or `nats://host:port[,…]`.
    #[arg(long, env = "KANADE_TRANSPORT", default_value = "memory")]
    transport: String,
    /// SQLite database file.
    #[arg(long, default_value = "kanade-backend.db", global = true)]
    db: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Serve the API over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM; mode 0600).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// OIDC issuer settings (TOML: issuer, audience, jwks_file or jwks_url,
    /// role_claim, role_map, scopes_claim).
    #[arg(long)]
    oidc_config: Option<PathBuf>,
    /// The backend's NATS NKey seed file (`kanade-backend nats-auth` writes
    /// it; mode 0600).
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
    /// An Ed25519 key commands and kills are signed with (a file
    /// `kanade-backend keygen` wrote; mode 0600). Repeat it during a
    /// rotation: every key is checked, the newest file signs. Without one
    /// they go out unsigned and enforcing agents refuse them.
    #[arg(long, env = "KANADE_SIGNING_KEY", value_delimiter = ',')]
    signing_key: Vec<PathBuf>,
    /// Refuse results not proven to come from the pc they name: the
    /// `{pc: public NKey}` map `nats-auth` writes (`DIR/agent-identities.json`;
    /// re-read when it changes). Agents started with `--nats-nkey` sign
    /// their results with it.
    #[arg(long, env = "KANADE_AGENT_IDENTITIES")]
    agent_identities: Option<PathBuf>,
    /// POST check alerts (JSON) to this URL, besides `alerts.<check>.<pc>`
    /// on the bus. Prefer the environment variable if it holds a secret.
    #[arg(long, env = "KANADE_ALERT_WEBHOOK", hide_env_values = true)]
    alert_webhook: Option<String>,
    /// Accept every API call without a credential, as an admin. Only with a
    /// loopback --listen, for demos; calls are still audited.
    #[arg(long)]
    insecure_no_auth: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Offline>,
}

/// Work on the database file, without serving.
#[derive(Debug, Subcommand)]
enum Offline {
    /// API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Generate a command-signing key: writes the private key (mode 0600)
    /// and prints the key-ring entry for agents (`command-keys.json`).
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// Key id (default: `k-<date>`).
        #[arg(long)]
        kid: Option<String>,
        /// A label for the ring entry.
        #[arg(long)]
        label: Option<String>,
        /// Agents refuse signatures older than this (`7d`; a break-glass
        /// key needs a short one).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<std::time::Duration>,
        /// An emergency key: every command or kill it signs is audited.
        /// Needs --max-age.
        #[arg(long, requires = "max_age")]
        break_glass: bool,
    },
    /// Generate NATS NKey identities (backend + one per agent; seeds
    /// `DIR/<name>.nk`, mode 0600, never overwritten) and the server's
    /// `authorization` block `DIR/authorization.conf`, rebuilt from every
    /// seed in DIR (kanade_backend::nats_auth documents the permissions).
    NatsAuth {
        /// Directory of the seeds and of authorization.conf.
        #[arg(long)]
        out: PathBuf,
        /// Agents' pc ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
        /// One more agent (repeatable); existing seeds are kept.
        #[arg(long)]
        agent: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token; prints the token alone on stdout (shown once).
    Create(kanade_backend::cli_args::TokenSpec),
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name or id (effective on the next call).
    Revoke {
        /// Name or id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain; exits 1 naming the first entry that was
    /// changed, removed or reordered.
    Verify,
}

async fn open_transport(
    spec: &str,
    nkey: Option<String>,
    tls: kanade_transport_nats::TlsOptions,
) -> Result<Arc<dyn Transport>, String> {
    let opened = kanade_transport_nats::open_with(spec, |options| {
        options.name = Some("kanade-backend".into());
        if let Some(seed) = nkey {
            options.auth = kanade_transport_nats::Auth::NKey(seed);
        }
        options.tls = tls;
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(nats) = &opened.nats {
        let report = provision(nats).await.map_err(|e| e.to_string())?;
        tracing::info!(created = ?report.created, updated = ?report.updated, "provisioned");
    }
    Ok(opened.transport)
}

fn open_db(path: &Path) -> Result<Db, String> {
    Db::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `nats-auth`: seeds for the backend and `agents`, and the server's
/// authorization block.
fn nats_auth(out: &Path, agents: impl Iterator<Item = String>) -> Result<ExitCode, String> {
    use kanade_backend::nats_auth;
    let agents = agents
        .map(|pc| kanade_core::names::SubjectToken::pc(pc).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let made = nats_auth::generate(out, &agents).map_err(|e| e.to_string())?;
    for name in &made.created {
        eprintln!(
            "created {} (mode 0600)",
            nats_auth::seed_path(out, name).display()
        );
    }
    eprintln!(
        "wrote {} for the backend and {} agent(s); include it from nats-server.conf and \
         start each binary with --nats-nkey <its seed file>",
        made.authorization.display(),
        made.agents.len()
    );
    eprintln!(
        "wrote {}; start the backend with --agent-identities {} to refuse results \
         published in another pc's name",
        made.agent_identities.display(),
        made.agent_identities.display()
    );
    println!("{}", made.authorization.display());
    Ok(ExitCode::SUCCESS)
}

fn offline(db_path: &Path, command: Offline) -> Result<ExitCode, String> {
    if let Offline::Keygen {
        out,
        kid,
        label,
        max_age,
        break_glass,
    } = command
    {
        return keygen(&out, kid, label, max_age, break_glass);
    }
    if let Offline::NatsAuth { out, agents, agent } = command {
        return nats_auth(&out, agents.into_iter().chain(agent));
    }
    let db = open_db(db_path)?;
    let now = chrono::Utc::now();
    match command {
        Offline::Token {
            action: TokenCmd::Create(spec),
        } => {
            let new = spec.new_token(now)?;
            let entry = offline_entry(
                now,
                "token.create",
                Some(new.name.clone()),
                serde_json::json!({"name": new.name, "role": new.role, "scopes": new.scopes, "expires_at": new.expires_at}),
            );
            let (row, token) = db
                .create_token_audited(&new, "kanade-backend", now, Some(entry))
                .map_err(|e| e.to_string())?;
            eprintln!(
                "created {} token {:?} (shown once; only its hash is stored)",
                row.role, row.name
            );
            println!("{token}");
        }
        Offline::Token {
            action: TokenCmd::List,
        } => {
            println!(
                "{:<20} {:<9} {:<8} {:<26} {:<26} scopes",
                "name", "role", "revoked", "expires", "last used"
            );
            for t in db.tokens().map_err(|e| e.to_string())? {
                println!(
                    "{:<20} {:<9} {:<8} {:<26} {:<26} {}",
                    t.name,
                    t.role,
                    t.revoked,
                    t.expires_at.as_deref().unwrap_or("never"),
                    t.last_used_at.as_deref().unwrap_or("never"),
                    serde_json::to_string(&t.scopes).unwrap_or_default()
                );
            }
        }
        Offline::Token {
            action: TokenCmd::Revoke { name },
        } => {
            let entry = offline_entry(
                now,
                "token.revoke",
                Some(name.clone()),
                serde_json::json!({"name": name}),
            );
            if !db
                .revoke_token_audited(&name, Some(entry))
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no token named {name:?}"));
            }
            eprintln!("revoked {name}");
        }
        Offline::Keygen { .. } | Offline::NatsAuth { .. } => {}
        Offline::Audit {
            action: AuditCmd::Verify,
        } => match db.verify_audit().map_err(|e| e.to_string())? {
            Ok(report) => {
                println!(
                    "audit trail intact: {} entries, last hash {}",
                    report.entries, report.last_hash
                );
            }
            Err(broken) => {
                println!(
                    "audit trail BROKEN at seq {}: {}",
                    broken.seq, broken.reason
                );
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// An audit entry for an offline change (actor `kanade-backend`, source
/// `cli` on this host).
fn offline_entry(
    now: chrono::DateTime<chrono::Utc>,
    action: &str,
    target: Option<String>,
    params: serde_json::Value,
) -> kanade_backend::audit::AuditDraft {
    let source = kanade_core::wire::AuditSource {
        ip: None,
        kind: "cli".into(),
    };
    let mut entry =
        kanade_backend::audit::AuditDraft::new(now, "kanade-backend", source, action, "ok");
    entry.target = target;
    entry.params = params;
    entry
}

/// The OIDC verifier from its config file (the JWKS read from its file or
/// fetched from its URL once at start).
fn load_oidc(path: &Path) -> Result<OidcVerifier, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: OidcConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let jwks = match config
        .jwks_source()
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        JwksSource::File(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("JWKS file {}: {e}", file.display()))?,
        JwksSource::Url(url) => ureq::get(url)
            .call()
            .map_err(|e| format!("fetching the JWKS from {url}: {e}"))?
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the JWKS from {url}: {e}"))?,
    };
    OidcVerifier::new(config, &jwks).map_err(|e| format!("{}: {e}", path.display()))
}

async fn serve(args: Args) -> Result<(), String> {
    let listen: SocketAddr = tokio::net::lookup_host(&args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?
        .next()
        .ok_or_else(|| format!("--listen {}: no address", args.listen))?;
    let oidc = match &args.oidc_config {
        Some(path) => Some(Arc::new(load_oidc(path)?)),
        None => None,
    };
    if args.insecure_no_auth {
        if !listen.ip().is_loopback() {
            return Err(format!(
                "--insecure-no-auth is for loopback demos only; refusing to serve {listen} without authentication"
            ));
        }
        tracing::warn!(%listen, "--insecure-no-auth: every API call is accepted as an admin; never do this outside a demo");
        eprintln!(
            "kanade-backend: WARNING: --insecure-no-auth: the API accepts every call as an admin"
        );
    } else if oidc.is_none() {
        let db = open_db(&args.db)?;
        let usable = db
            .has_usable_token(chrono::Utc::now())
            .map_err(|e| e.to_string())?;
        if !usable {
            return Err(format!(
                "no way to authenticate anyone: {db} has no usable API token and no --oidc-config is given.\n\
                 Create the first admin token with\n  kanade-backend token create --db {db} --name admin --role admin\n\
                 and log in with `kanade login --token <token>`.",
                db = args.db.display()
            ));
        }
    }
    let mut settings = BackendSettings::new(&args.db);
    settings.alert_webhook = args.alert_webhook.clone();
    match newest_signer(&args.signing_key)? {
        Some(signer) => {
            if signer.break_glass() {
                tracing::warn!(
                    kid = signer.kid(),
                    "signing with the BREAK-GLASS key: every use is audited"
                );
            }
            tracing::info!(kid = signer.kid(), "signing commands and kills");
            settings.signer = Some(Arc::new(signer));
        }
        None => {
            tracing::warn!(
                "no --signing-key: commands go out unsigned, and enforcing agents refuse them"
            );
            eprintln!("kanade-backend: WARNING: no --signing-key: commands go out unsigned (enforcing agents refuse them)");
        }
    }
    if let Some(path) = &args.agent_identities {
        let identities = kanade_backend::AgentIdentities::from_file(path)?;
        tracing::info!(pcs = identities.len(), "results must prove their publisher");
        settings.agent_identities = Some(Arc::new(identities));
    }
    let nkey = match &args.nats_nkey {
        // Checked as nats-auth wrote it: owner-only, a user seed.
        Some(path) => Some(kanade_backend::nats_auth::read_seed(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let tls = kanade_transport_nats::TlsOptions {
        required: args.nats_ca.is_some() || args.nats_cert.is_some(),
        root_certificates: args.nats_ca.clone(),
        client_certificate: args.nats_cert.clone().zip(args.nats_key.clone()),
    };
    let transport = open_transport(&args.transport, nkey, tls).await?;
    let backend = Backend::open(transport, settings)
        .await
        .map_err(|e| e.to_string())?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the API is served without TLS: bearer tokens cross the network in clear (use --tls-cert/--tls-key)");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    eprintln!(
        "kanade-backend: API on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let projectors = tokio::spawn(backend.clone().run(std::future::pending()));
    let scheduler =
        tokio::spawn(kanade_backend::Scheduler::new(backend.clone()).run(std::future::pending()));
    let auth = ApiAuth {
        oidc,
        insecure_no_auth: args.insecure_no_auth,
    };
    let app = http::router_with(backend, auth);
    match tls {
        Some(acceptor) => serve_tls(listener, app, acceptor).await?,
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())?,
    }
    projectors.abort();
    scheduler.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let level = ["warn", "info", "debug"][usize::from(args.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = match args.command.take() {
        Some(command) => offline(&args.db, command),
        None => serve(args).await.map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kanade-backend: {e}");
            ExitCode::from(2)
        }
    }
}
