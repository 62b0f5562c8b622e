//! [`AgentBuilder`]: opens the state directory and assembles an [`Agent`]
//! from settings, a transport and optional runner, clock and connection
//! state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use kanade_core::policy::HostSupport;
use kanade_core::transport::Transport;
use kanade_core::wire::Shell;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::agent::Agent;
use crate::clock::{Clock, SystemClock};
use crate::ledger::Ledger;
use crate::limiter::Limiter;
use crate::outbox::Outbox;
use crate::runner::{ProcessRunner, ScriptRunner};
use crate::state::{Inner, Live};
use crate::state_files::{DiskFiles, StateFiles};
use crate::{AgentError, AgentSettings};

/// Builds an [`Agent`].
pub struct AgentBuilder {
    settings: AgentSettings,
    transport: Arc<dyn Transport>,
    runner: Option<Arc<dyn ScriptRunner>>,
    clock: Option<Arc<dyn Clock>>,
    connected: Option<watch::Receiver<bool>>,
    files: Option<Arc<dyn StateFiles>>,
}

impl Agent {
    /// Starts building an agent over `transport`.
    pub fn builder(settings: AgentSettings, transport: Arc<dyn Transport>) -> AgentBuilder {
        AgentBuilder {
            settings,
            transport,
            runner: None,
            clock: None,
            connected: None,
            files: None,
        }
    }
}

impl AgentBuilder {
    /// Runs scripts with `runner` instead of spawning processes.
    pub fn runner(mut self, runner: Arc<dyn ScriptRunner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Reads time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Feeds the connection state (true: connected) for strict staleness.
    /// Without it the agent counts itself always connected.
    pub fn connection_state(mut self, connected: watch::Receiver<bool>) -> Self {
        self.connected = Some(connected);
        self
    }

    /// Keeps the ledger, outbox, registration and script cache in `files`
    /// instead of on the local disk ([`DiskFiles`]); a simulation passes a
    /// [`MemoryFiles`] that outlives the agent's crash-restarts.
    ///
    /// [`MemoryFiles`]: crate::state_files::MemoryFiles
    pub fn state_files(mut self, files: Arc<dyn StateFiles>) -> Self {
        self.files = Some(files);
        self
    }

    /// Opens the state directory and builds the agent.
    pub fn build(self) -> Result<Agent, AgentError> {
        let settings = self.settings;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let runner = self
            .runner
            .unwrap_or_else(|| Arc::new(ProcessRunner::default()));
        let log = self.transport.messages();
        let files = self.files.unwrap_or_else(|| Arc::new(DiskFiles));
        let ledger = Ledger::open_in(
            files.clone(),
            &settings.state_dir.join("ledger"),
            clock.now(),
        )?;
        let outbox = Outbox::open_in(
            files.clone(),
            &settings.state_dir.join("outbox"),
            log.clone(),
        )?
        .with_signer(settings.publisher_signer.clone());
        // Process records stay on the disk: they name real processes.
        std::fs::create_dir_all(crate::orphans::records_dir(&settings.state_dir))
            .map_err(|e| AgentError::io("creating process records", &settings.state_dir, e))?;
        files
            .create_dir_all(&settings.state_dir.join("scripts"))
            .map_err(|e| AgentError::io("creating script cache", &settings.state_dir, e))?;
        let host = HostSupport {
            shells: Shell::ALL
                .into_iter()
                .filter(|s| runner.supports(*s))
                .collect(),
            interactive_sessions: settings.interactive_sessions,
        };
        let cpus = settings
            .default_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let rng = match settings.jitter_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let trust = Arc::new(crate::trust::Trust::load(&settings.trust)?);
        let live = Live {
            groups: settings.groups.clone(),
            ever_connected: self.connected.is_none(),
            ..Live::default()
        };
        let started_at = clock.now();
        Ok(Agent {
            inner: Arc::new(Inner {
                transport: self.transport,
                log,
                runner,
                clock,
                host,
                ledger,
                outbox,
                files,
                limiter: Limiter::new(cpus),
                live: Mutex::new(live),
                live_changed: Notify::new(),
                live_version: std::sync::atomic::AtomicU64::new(0),
                groups_changed: Notify::new(),
                kills: Mutex::new(HashMap::new()),
                killed: Mutex::new(HashMap::new()),
                kill_bucket: Mutex::new(None),
                clock_offset: Mutex::new(Default::default()),
                started_at,
                rng: Mutex::new(rng),
                connected: self.connected,
                trust,
                cpus,
                in_flight: AtomicUsize::new(0),
                all_done: Notify::new(),
                executions: Mutex::new(JoinSet::new()),
                closed: AtomicBool::new(false),
                update_installed: tokio::sync::watch::channel(None).0,
                kv_state_loaded: AtomicBool::new(false),
                kv_state_loading: tokio::sync::Mutex::new(()),
                metrics: crate::metrics::AgentMetrics::default(),
                settings,
            }),
        })
    }
}
