//! Agent settings, and the file format the binary reads them from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kanade_core::names::SubjectToken;
use serde::Deserialize;

use crate::AgentError;

/// How an agent behaves. Live config from the `agent_config` bucket
/// overrides the heartbeat interval and concurrency while running.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This endpoint's id.
    pub pc_id: SubjectToken,
    /// Groups to join before `agent_groups` says otherwise.
    pub groups: Vec<SubjectToken>,
    /// Where the ledger, outbox and script cache live.
    pub state_dir: PathBuf,
    /// Replay the EXEC stream through a durable consumer on start.
    pub replay: bool,
    /// How often the outbox backlog is retried.
    pub drain_interval: Duration,
    /// Seed for jitter (None: random).
    pub jitter_seed: Option<u64>,
    /// Whether an interactive user session exists (`run_as: user | system_gui`).
    pub interactive_sessions: bool,
    /// Reported in heartbeats.
    pub agent_version: String,
    /// Publish hardware inventory at start and daily.
    pub inventory: bool,
    /// Commands run at once while `agent_config` sets no limit (`None`: the
    /// CPU count). Simulations pin it so results do not depend on the host.
    pub default_concurrency: Option<usize>,
    /// Which commands this host trusts: the command-key ring and the
    /// signature mode (local configuration only, never from the broker).
    pub trust: crate::trust::TrustSettings,
    /// Signs results and other outbox publishes with this agent's NATS
    /// identity (the binary uses its `--nats-nkey` seed), so a backend
    /// holding the pc's public NKey can refuse results published in its
    /// name by anyone else. `None`: no proof is attached.
    pub publisher_signer: Option<kanade_core::policy::publisher::PublisherSigner>,
    /// Self-update: follow `target_version` and replace this executable
    /// with verified releases (see [`crate::update`]). `None` (the
    /// default): never; the `kanade-agent` binary turns it on.
    pub self_update: Option<crate::update::SelfUpdate>,
    /// Whether it follows and fires `runs_on: agent` schedules (default
    /// true; the simulation, whose workloads have none, turns it off and
    /// saves a watch per agent).
    pub agent_schedules: bool,
    /// This boot's id for `on: [startup]` schedules (`None`: the host's,
    /// from `/proc/sys/kernel/random/boot_id`; tests set one).
    pub boot_id: Option<String>,
}

impl AgentSettings {
    /// Settings with defaults for `pc_id`, keeping state in `state_dir`.
    pub fn new(pc_id: SubjectToken, state_dir: impl AsRef<Path>) -> Self {
        Self {
            pc_id,
            groups: Vec::new(),
            state_dir: state_dir.as_ref().to_path_buf(),
            replay: true,
            drain_interval: Duration::from_secs(1),
            jitter_seed: None,
            interactive_sessions: false,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            inventory: true,
            default_concurrency: None,
            trust: crate::trust::TrustSettings::default(),
            publisher_signer: None,
            self_update: None,
            boot_id: None,
            agent_schedules: true,
        }
    }
}

/// The `kanade-agent --config` file, in TOML. Every key is optional;
/// command-line flags win; an unknown key is an error naming it.
///
/// ```toml
/// pc_id = "pc-0042"
/// groups = ["canary", "accounting"]
/// state_dir = "/var/lib/kanade-agent"
/// transport = "nats://nats-1:4222,nats://nats-2:4222"
/// replay = true
///
/// [trust]
/// keys = "/etc/kanade/command-keys.json"   # the reference's ring format
/// mode = "enforce"                          # off | observe | enforce
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This endpoint's id (default: the host name).
    pub pc_id: Option<String>,
    /// Initial groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// `memory`, `file:<dir>` or `nats://host:port[,…]`.
    pub transport: Option<String>,
    /// Replay EXEC on start.
    pub replay: Option<bool>,
    /// `[trust]`: the command-key ring and the signature mode.
    #[serde(default)]
    pub trust: Option<TrustFileConfig>,
}

/// The `[trust]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustFileConfig {
    /// The key-ring file.
    pub keys: Option<PathBuf>,
    /// `off`, `observe` or `enforce`.
    pub mode: Option<crate::trust::SignatureMode>,
}

impl FileConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<Self, AgentError> {
        toml::from_str(text).map_err(|e| AgentError::ConfigFile {
            reason: e.to_string(),
        })
    }
}
