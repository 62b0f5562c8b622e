//! Least privilege on the broker (DESIGN §10): one NATS NKey identity per
//! agent and one for the backend, and the `authorization { users = [...] }`
//! block a `nats-server.conf` includes to hold each to what it needs.
//!
//! `kanade-backend nats-auth --out DIR --agents pc-001,pc-002` writes one
//! user seed (`SU…`) per identity to `DIR/<name>.nk` (mode 0600; an
//! existing seed is never overwritten, so `--agent pc-003` later adds one
//! without touching the others) — `DIR/backend.nk` for the backend,
//! `DIR/<pc>.nk` for each agent — and regenerates `DIR/authorization.conf`
//! from every seed in `DIR`. Removing an agent is deleting its seed and
//! running the command again. The server config then says
//! `include "authorization.conf"` (relative to the config file) and the
//! binaries connect with `--nats-nkey DIR/<name>.nk`.
//!
//! ## What each identity may do
//!
//! The **backend** may publish and subscribe to everything (`>`): it
//! provisions streams, buckets and stores, publishes commands and kills,
//! and reads every result.
//!
//! An **agent** (pc `P`, see [`agent_permissions`]) may
//!
//! - subscribe to `commands.all`, `commands.group.*`, `commands.pc.P`,
//!   `kill.*`, `agents.P.ping` and its own reply subjects `_INBOX_P.>`
//!   (JetStream API replies, acks, pulled and watched messages; the agent
//!   connects with that inbox prefix when given `--nats-nkey`), never
//!   the shared `_INBOX.>` where other clients' replies travel;
//! - publish its own `heartbeat.P`, `events.started.*.P`, `obs.P`,
//!   `inventory.P.*`, any `results.*`, the create of its own
//!   `agent_groups` key (`$KV.agent_groups.P`) and overflowing output to
//!   the `result_output` object store (`$O.result_output.C.>` chunks and
//!   `$O.result_output.M.>` metadata);
//! - call exactly the JetStream API its transport uses: list streams (to
//!   know which publishes a stream acknowledges), read `EXEC`'s info and
//!   create, pull from, inspect and ack its own durable replay consumer
//!   `agent_P`; read and watch `script_current`, `script_status`,
//!   `agent_config`, `agent_groups`, `exec_kills` (durable kills) and
//!   `agent_schedules` (`runs_on: agent` schedules) (stream info, direct /
//!   message get, ephemeral ordered consumers and their flow-control
//!   replies); read the `scripts` and `agent_releases` object stores; look
//!   up objects in `result_output`.
//!
//! Everything else is refused by the server ("Permissions Violation"): an
//! agent cannot publish `commands.>` or `kill.*`, write `script_status`,
//! `script_current` or `agent_config` (nor another pc's `agent_groups`
//! key), create, update or delete streams, buckets, stores or other
//! consumers, purge anything, or publish another pc's heartbeat, start
//! events, obs events or inventory. A ping whose reply header names any
//! subject but `heartbeat.P` is answered into the void.
//!
//! ## What NATS permissions cannot express
//!
//! Subject permissions see subjects, not payloads or memberships, so some
//! rules must be (or are) checked elsewhere:
//!
//! - **`results.*` carries any pc's result.** The subject is
//!   `results.<request_id>`; the pc is only in the payload, so the broker
//!   lets an agent publish a result claiming another `pc_id`. The
//!   **backend** checks it: each agent signs what it publishes with its
//!   NKey (a publisher proof, `kanade_core::policy::publisher`), and a
//!   backend started with `--agent-identities DIR/agent-identities.json`
//!   (written here, pc → public NKey) refuses — and audits as
//!   `result.refused` — a result whose proof is missing or is not the
//!   named pc's.
//! - **`commands.group.*` is every group.** Memberships live in
//!   `agent_groups` and change at run time; a static permission cannot
//!   follow them. An agent can therefore *read* commands of groups it is
//!   not in (it cannot publish any command). Likewise its replay consumer's
//!   filter subjects travel in the request body, so it could ask EXEC for
//!   any `commands.>` subject through `agent_P`. Commands are signed
//!   (DESIGN §6), so reading one grants nothing but its contents.
//! - **`$KV.agent_groups.P` allows a put, not only a create**: an agent
//!   can change its own memberships (never another pc's). Treat an agent's
//!   groups as a claim, not as authority.
//! - **Object names are base64 in subjects** (`$O.<store>.M.<b64(name)>`),
//!   so `result_output` writes cannot be limited to keys
//!   `<request_id>/P/…`: an agent can overwrite another pc's overflowed
//!   output. The backend reads the object a result points to: the result
//!   itself is proven (first point), the object it names is not. Without
//!   purge rights, overwriting an existing object leaves its old chunks
//!   behind (and the agent's put reports an error after storing it).
//! - **Reads are not partitioned**: KV watches and `scripts` reads cover
//!   whole buckets (every pc's `agent_config` scope, every job's status).
//! - **Reply subjects** are closed by a per-identity prefix, not by a
//!   subject rule alone: async-nats clients receive replies on `_INBOX.…`
//!   by default, so an agent granted `_INBOX.>` could read the replies
//!   every other client (the backend included) receives. Agents connect
//!   with the prefix `_INBOX_P` and are granted `_INBOX_P.>` only; an
//!   embedder that connects an agent without that prefix gets no replies
//!   (its JetStream calls time out).
//! - Ephemeral consumers on the read buckets and `scripts` may be created
//!   at will (a resource, not a confidentiality, concern): bound them with
//!   JetStream account limits if agents are not trusted with that.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use kanade_core::names::{
    subjects, SubjectToken, BUCKET_AGENT_CONFIG, BUCKET_AGENT_GROUPS, BUCKET_AGENT_SCHEDULES,
    BUCKET_EXEC_KILLS, BUCKET_SCRIPT_CURRENT, BUCKET_SCRIPT_STATUS, OBJECT_AGENT_RELEASES,
    OBJECT_RESULT_OUTPUT, OBJECT_SCRIPTS, STREAM_EXEC,
};

/// Name of the backend's identity (`DIR/backend.nk`); no pc may use it.
pub const BACKEND_IDENTITY: &str = "backend";
/// Extension of seed files.
pub const SEED_EXTENSION: &str = "nk";
/// The generated server block, next to the seeds.
pub const AUTHORIZATION_FILE: &str = "authorization.conf";
/// The generated `{pc: public NKey}` map the backend checks results
/// against (`kanade-backend --agent-identities`), next to the seeds.
pub const AGENT_IDENTITIES_FILE: &str = "agent-identities.json";

/// The KV buckets an agent reads and watches (never writes, except the
/// create of its own `agent_groups` key).
pub const AGENT_READ_BUCKETS: [&str; 6] = [
    BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS,
    BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS,
    BUCKET_EXEC_KILLS,
    BUCKET_AGENT_SCHEDULES,
];

/// The JetStream API subject prefix.
const JS_API: &str = "$JS.API";
/// JetStream names the stream behind KV bucket `b` `KV_b`.
const KV_STREAM_PREFIX: &str = "KV_";
/// … and the one behind object store `o` `OBJ_o`.
const OBJECT_STREAM_PREFIX: &str = "OBJ_";

/// Subjects one identity may publish to and subscribe to (NATS `allow`
/// lists; everything else is denied).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects (with wildcards) it may publish to.
    pub publish: Vec<String>,
    /// Subjects (with wildcards) it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The backend's permissions: everything.
pub fn backend_permissions() -> Permissions {
    Permissions {
        publish: vec![">".to_owned()],
        subscribe: vec![">".to_owned()],
    }
}

/// The JetStream API calls that read KV bucket `bucket` and watch it.
fn kv_read_api(bucket: &str, publish: &mut Vec<String>) {
    let stream = format!("{KV_STREAM_PREFIX}{bucket}");
    stream_read_api(&stream, publish);
}

/// Stream info, direct and message gets, ephemeral (ordered) consumers
/// and their flow-control replies on `stream`.
fn stream_read_api(stream: &str, publish: &mut Vec<String>) {
    publish.extend([
        format!("{JS_API}.STREAM.INFO.{stream}"),
        format!("{JS_API}.STREAM.MSG.GET.{stream}"),
        format!("{JS_API}.DIRECT.GET.{stream}"),
        format!("{JS_API}.DIRECT.GET.{stream}.>"),
        // Ordered consumers: unnamed (`CONSUMER.CREATE.<stream>`) or named
        // with a filter (`CONSUMER.CREATE.<stream>.<name>.<filter>`).
        format!("{JS_API}.CONSUMER.CREATE.{stream}"),
        format!("{JS_API}.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]);
}

/// What an agent with pc id `pc` may publish and subscribe to (see the
/// module docs for the reasoning and for what cannot be expressed).
pub fn agent_permissions(pc: &SubjectToken) -> Permissions {
    let exec_consumer = format!("agent_{pc}");
    let mut publish = vec![
        subjects::heartbeat(pc),
        // `results.<request_id>`: the pc is only in the payload.
        subjects::RESULTS_FILTER.replace('>', "*"),
        format!("events.started.*.{pc}"),
        subjects::obs(pc),
        format!("inventory.{pc}.*"),
        // The create of its own membership key.
        format!("$KV.{BUCKET_AGENT_GROUPS}.{pc}"),
        // Overflowing output: chunks and metadata.
        format!("$O.{OBJECT_RESULT_OUTPUT}.C.>"),
        format!("$O.{OBJECT_RESULT_OUTPUT}.M.>"),
        // Which streams capture a publish (the transport's routing).
        format!("{JS_API}.STREAM.LIST"),
        // The EXEC replay: its own durable consumer only.
        format!("{JS_API}.STREAM.INFO.{STREAM_EXEC}"),
        format!("{JS_API}.CONSUMER.CREATE.{STREAM_EXEC}.{exec_consumer}"),
        format!("{JS_API}.CONSUMER.CREATE.{STREAM_EXEC}.{exec_consumer}.>"),
        format!("{JS_API}.CONSUMER.DURABLE.CREATE.{STREAM_EXEC}.{exec_consumer}"),
        format!("{JS_API}.CONSUMER.INFO.{STREAM_EXEC}.{exec_consumer}"),
        format!("{JS_API}.CONSUMER.MSG.NEXT.{STREAM_EXEC}.{exec_consumer}"),
        format!("$JS.ACK.{STREAM_EXEC}.{exec_consumer}.>"),
    ];
    for bucket in AGENT_READ_BUCKETS {
        kv_read_api(bucket, &mut publish);
    }
    // Script bodies and agent releases (self-update): read.
    for store in [OBJECT_SCRIPTS, OBJECT_AGENT_RELEASES] {
        stream_read_api(&format!("{OBJECT_STREAM_PREFIX}{store}"), &mut publish);
    }
    // Overflowing output: look up an existing object before a put.
    let output = format!("{OBJECT_STREAM_PREFIX}{OBJECT_RESULT_OUTPUT}");
    publish.extend([
        format!("{JS_API}.STREAM.INFO.{output}"),
        format!("{JS_API}.STREAM.MSG.GET.{output}"),
        format!("{JS_API}.DIRECT.GET.{output}"),
        format!("{JS_API}.DIRECT.GET.{output}.>"),
    ]);

    let subscribe = vec![
        subjects::COMMANDS_ALL.to_owned(),
        // Every group: memberships change at run time (module docs).
        "commands.group.*".to_owned(),
        subjects::commands_pc(pc),
        "kill.*".to_owned(),
        subjects::ping(pc),
        // Its own replies only (the agent connects with this prefix).
        format!("{}.>", subjects::agent_inbox_prefix(pc)),
    ];
    Permissions { publish, subscribe }
}

/// One allow list, a subject per line.
fn allow_list(out: &mut String, kind: &str, items: &[String]) {
    let _ = writeln!(out, "        {kind}: {{ allow: [");
    for item in items {
        // Subjects are ASCII without quotes or backslashes; `$` inside
        // double quotes is literal (no variable expansion).
        let _ = writeln!(out, "          \"{item}\"");
    }
    out.push_str("        ] }\n");
}

fn user_entry(out: &mut String, comment: &str, nkey: &str, permissions: &Permissions) {
    let _ = writeln!(out, "    # {comment}");
    let _ = writeln!(out, "    {{");
    let _ = writeln!(out, "      nkey: \"{nkey}\"");
    out.push_str("      permissions: {\n");
    allow_list(out, "publish", &permissions.publish);
    allow_list(out, "subscribe", &permissions.subscribe);
    out.push_str("      }\n    }\n");
}

/// The server's `authorization` block: the backend (everything) and each
/// agent ([`agent_permissions`]), by NKey public key (`U…`).
pub fn authorization_block(backend_nkey_pub: &str, agents: &[(SubjectToken, String)]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Generated by `kanade-backend nats-auth`; regenerated from the seeds on every run.\n\
         # Include it from nats-server.conf: include \"authorization.conf\"\n\
         authorization {\n  users = [\n",
    );
    user_entry(
        &mut out,
        "kanade backend",
        backend_nkey_pub,
        &backend_permissions(),
    );
    for (pc, nkey) in agents {
        user_entry(
            &mut out,
            &format!("agent {pc}"),
            nkey,
            &agent_permissions(pc),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// Why identities could not be generated or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsAuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A seed file does not hold a user NKey seed.
    #[error("{path}: not a NATS user NKey seed (SU…): {reason}")]
    BadSeed {
        /// The seed file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A seed file's name is not `backend.nk` or a valid pc id.
    #[error("{path}: the file name is not a pc id: {reason}")]
    BadName {
        /// The seed file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A pc is called like the backend's identity.
    #[error("pc id {BACKEND_IDENTITY:?} is reserved for the backend's identity")]
    ReservedName,
    /// A seed file others can read.
    #[error("{path}: mode {mode:o} lets others read the seed; chmod 600 it")]
    Exposed {
        /// The seed file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NatsAuthError + '_ {
    move |source| NatsAuthError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `DIR/<name>.nk`.
pub fn seed_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{SEED_EXTENSION}"))
}

/// The public key (`U…`) of a user seed (`SU…`).
pub fn public_key(seed: &str) -> Result<String, String> {
    let pair = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| e.to_string())?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(format!(
            "a {:?} seed, not a user seed",
            pair.key_pair_type()
        ));
    }
    Ok(pair.public_key())
}

/// Reads a seed file (what `--nats-nkey FILE` names), refusing one that is
/// not a user seed or (on Unix) that group or others can read. Returns the
/// seed, for `Auth::NKey`.
pub fn read_seed(path: &Path) -> Result<String, NatsAuthError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(NatsAuthError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let seed = text.trim().to_owned();
    public_key(&seed).map_err(|reason| NatsAuthError::BadSeed {
        path: path.to_owned(),
        reason,
    })?;
    Ok(seed)
}

/// Writes a new user seed to `path` (mode 0600) unless the file exists.
/// Returns whether it was created.
fn ensure_seed(path: &Path) -> Result<bool, NatsAuthError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io_error(path)(e)),
    };
    let seed = nkeys::KeyPair::new_user()
        .seed()
        .map_err(|e| NatsAuthError::BadSeed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    file.write_all(format!("{seed}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))?;
    Ok(true)
}

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// The backend's public key.
    pub backend: String,
    /// Every agent with a seed in the directory and its public key, by pc.
    pub agents: Vec<(SubjectToken, String)>,
    /// Identities whose seed this run created (`backend` or pc ids).
    pub created: Vec<String>,
    /// The authorization block written.
    pub authorization: PathBuf,
    /// The `{pc: public NKey}` map written for `--agent-identities`.
    pub agent_identities: PathBuf,
}

/// Replaces `path` with `bytes` at once (a sibling `.partial`, renamed):
/// a reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), NatsAuthError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes).map_err(io_error(&partial))?;
    std::fs::rename(&partial, path).map_err(io_error(path))
}

/// Creates `dir` if needed, a seed for the backend and for each of
/// `agents` that has none yet (never overwriting one), and writes
/// `dir/authorization.conf` and `dir/agent-identities.json` for every
/// seed in `dir`.
pub fn generate(dir: &Path, agents: &[SubjectToken]) -> Result<Identities, NatsAuthError> {
    if agents.iter().any(|pc| pc.as_str() == BACKEND_IDENTITY) {
        return Err(NatsAuthError::ReservedName);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))?;
    let mut created = Vec::new();
    if ensure_seed(&seed_path(dir, BACKEND_IDENTITY))? {
        created.push(BACKEND_IDENTITY.to_owned());
    }
    for pc in agents {
        if ensure_seed(&seed_path(dir, pc.as_str()))? {
            created.push(pc.to_string());
        }
    }

    let mut backend = None;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEED_EXTENSION) {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let key = public_key(&read_seed(&path)?).map_err(|reason| NatsAuthError::BadSeed {
            path: path.clone(),
            reason,
        })?;
        if stem == BACKEND_IDENTITY {
            backend = Some(key);
            continue;
        }
        let pc = SubjectToken::pc(stem).map_err(|e| NatsAuthError::BadName {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        found.push((pc, key));
    }
    found.sort();
    let backend_path = seed_path(dir, BACKEND_IDENTITY);
    let backend = backend.ok_or_else(|| NatsAuthError::BadSeed {
        path: backend_path,
        reason: "missing".into(),
    })?;

    let block = authorization_block(&backend, &found);
    let authorization = dir.join(AUTHORIZATION_FILE);
    write_replacing(&authorization, block.as_bytes())?;
    let identities = kanade_core::policy::publisher::PublisherIdentities::new(
        found.iter().map(|(pc, key)| (pc.to_string(), key.clone())),
    );
    let identities_file = dir.join(AGENT_IDENTITIES_FILE);
    write_replacing(&identities_file, identities.to_json().as_bytes())?;
    Ok(Identities {
        backend,
        agents: found,
        created,
        authorization,
        agent_identities: identities_file,
    })
}
