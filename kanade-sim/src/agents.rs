//! Starting one simulated agent: a real [`Agent`] on its own faulty link,
//! with the shared simulated clock and runner, a seeded jitter and a fixed
//! concurrency, running on a task of its own until told to stop.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use kanade_agent::state_files::MemoryFiles;
use kanade_agent::trust::SignatureMode;
use kanade_agent::{Agent, AgentSettings, Clock};
use kanade_core::names::SubjectToken;
use kanade_core::policy::signature::{KeyRing, VerifiedSignatures};
use kanade_core::transport::Transport;

use crate::error::SimError;
use crate::plan::SIM_CONCURRENCY;
use crate::runner::SimRunner;
use crate::schedule::pc_name;

/// A running agent and the means to stop it.
pub(crate) struct SimAgent {
    /// The agent.
    pub(crate) agent: Agent,
    /// The task running it.
    pub(crate) task: tokio::task::JoinHandle<()>,
    /// Ends its run.
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
}

/// What every agent of a fleet shares.
pub(crate) struct Shared {
    /// The simulated clock.
    pub(crate) clock: Arc<dyn Clock>,
    /// The runner recording every invocation.
    pub(crate) runner: Arc<SimRunner>,
    /// The plan's seed.
    pub(crate) seed: u64,
    /// The fleet's command-key ring: every agent enforces signatures.
    pub(crate) ring: KeyRing,
    /// Signatures that verified, shared by every agent: a command fanned
    /// out to the fleet is checked with Ed25519 once, the verdicts stay
    /// the same (see `VerifiedSignatures`).
    pub(crate) verified: Arc<VerifiedSignatures>,
    /// Each agent's clock offset from the simulated time, in milliseconds,
    /// by agent index (set by clock-step faults; survives a crash-restart,
    /// as a host's clock would). One array, not an allocation per agent:
    /// every heartbeat reads its agent's offset, and 10,000 scattered
    /// allocations missed the cache at each read.
    pub(crate) clock_offsets: Arc<[AtomicI64]>,
    /// Each agent's state files (ledger, outbox, registration), in
    /// memory: they survive its crash-restarts as a disk would, and a
    /// fleet of thousands does not spend its time in file system calls.
    pub(crate) state_files: Vec<Arc<MemoryFiles>>,
}

/// The simulated clock, offset by a step a fault can change: agent
/// `index`'s entry of the fleet's offsets.
struct SkewedClock {
    base: Arc<dyn Clock>,
    offsets: Arc<[AtomicI64]>,
    index: usize,
}

impl Clock for SkewedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let offset = self
            .offsets
            .get(self.index)
            .map_or(0, |offset| offset.load(Ordering::SeqCst));
        match offset {
            0 => self.base.now(),
            offset => self.base.now() + chrono::Duration::milliseconds(offset),
        }
    }
}

/// Builds agent `index` on `transport` with its state in `state` and
/// starts it.
pub(crate) fn start_agent(
    index: usize,
    transport: Arc<dyn Transport>,
    state: &Path,
    shared: &Shared,
) -> Result<SimAgent, SimError> {
    let pc = pc_name(index);
    let token = SubjectToken::pc(pc.clone()).map_err(SimError::PcId)?;
    let mut settings = AgentSettings::new(token, state);
    settings.inventory = false;
    settings.replay = true;
    // The workloads have no agent-side schedules: no watch per agent.
    settings.agent_schedules = false;
    settings.jitter_seed = Some(shared.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    // Not the host's CPU count: the same plan behaves the same anywhere.
    settings.default_concurrency = Some(SIM_CONCURRENCY);
    // Every simulated agent enforces command signatures (the backend signs).
    settings.trust.mode = SignatureMode::Enforce;
    settings.trust.ring = Some(shared.ring.clone());
    settings.trust.verified = Some(shared.verified.clone());
    let agent = Agent::builder(settings, transport)
        .runner(shared.runner.for_agent(&pc))
        .state_files(shared.state_files[index].clone())
        .clock(Arc::new(SkewedClock {
            base: shared.clock.clone(),
            offsets: shared.clock_offsets.clone(),
            index,
        }))
        .build()
        .map_err(|source| SimError::Agent {
            pc: pc.clone(),
            source,
        })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = agent.clone();
    let task = tokio::spawn(async move {
        let _ = running
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(SimAgent { agent, task, stop })
}
