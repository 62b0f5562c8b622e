//! The fault side of a simulation: every client's link and the agents'
//! lives ([`Links`]), driven through the fault timeline by a task of its
//! own so an operator retrying through an outage never holds up the end of
//! that outage; and, at the end, when each agent could have missed a
//! command ([`Exposure`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kanade_core::transport::fault::{DeliveryFault, FaultEvent, FaultInjector, FaultPlan};
use kanade_core::transport::fault::{FaultRates, FaultyTransport};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::Transport;

use crate::agents::{start_agent, Shared, SimAgent};
use crate::error::SimError;
use crate::outcome::Exposure;
use crate::runner::Invocation;
use crate::schedule::{pc_name, Fault, NetworkRates};
use crate::timeline::Step;
use crate::trace::{trace_line, Recorder};

/// Runs the backend's background work (projectors, reaper, rollout
/// driver, audit publisher) until aborted.
fn spawn_backend(backend: &kanade_backend::Backend) -> tokio::task::JoinHandle<()> {
    let running = backend.clone();
    tokio::spawn(async move {
        let _ = running.run(std::future::pending::<()>()).await;
    })
}

/// Every client's link and the agents' lives.
pub(crate) struct Links {
    origin: tokio::time::Instant,
    seed: u64,
    root: PathBuf,
    shared: Shared,
    backend_injector: Arc<FaultInjector>,
    injectors: Vec<Arc<FaultInjector>>,
    transports: Vec<Arc<dyn Transport>>,
    agents: Vec<Option<SimAgent>>,
    recorder: Arc<Mutex<Recorder>>,
    partitioned_until: Vec<Duration>,
    broker_down_until: Duration,
    crashes: Vec<(usize, Duration)>,
    /// The bus itself, for an attacker's client (no link, no faults).
    memory: MemoryTransport,
    /// Forged commands published so far.
    forged: u64,
    /// The backend, whose background work a backend restart kills.
    backend: kanade_backend::Backend,
    /// Its running background work (`None` while down).
    backend_task: Option<tokio::task::JoinHandle<()>>,
    backend_down_until: Duration,
}

/// Where the fault side starts from.
pub(crate) struct LinksStart {
    /// Simulated time zero.
    pub(crate) origin: tokio::time::Instant,
    /// The plan's seed.
    pub(crate) seed: u64,
    /// The state directory (agents' state below it).
    pub(crate) root: PathBuf,
    /// What every agent shares.
    pub(crate) shared: Shared,
    /// The backend's link.
    pub(crate) backend_injector: Arc<FaultInjector>,
    /// The backend (its background work is started here).
    pub(crate) backend: kanade_backend::Backend,
    /// The trace.
    pub(crate) recorder: Arc<Mutex<Recorder>>,
}

impl Links {
    /// Starts `agents` agents on `memory`, each behind a link with the
    /// plan's network rates.
    pub(crate) fn start(
        start: LinksStart,
        memory: &MemoryTransport,
        network: NetworkRates,
        agents: usize,
    ) -> Result<Links, SimError> {
        let LinksStart {
            origin,
            seed,
            root,
            shared,
            backend_injector,
            backend,
            recorder,
        } = start;
        let backend_task = Some(spawn_backend(&backend));
        let mut injectors = Vec::with_capacity(agents);
        let mut transports: Vec<Arc<dyn Transport>> = Vec::with_capacity(agents);
        let mut running = Vec::with_capacity(agents);
        for index in 0..agents {
            let faulty = FaultyTransport::new(
                Arc::new(memory.clone()),
                FaultPlan::Random(network.to_fault_rates(seed ^ (index as u64 + 1))),
            );
            injectors.push(faulty.injector());
            let transport: Arc<dyn Transport> = Arc::new(faulty);
            transports.push(transport.clone());
            running.push(Some(start_agent(
                index,
                transport,
                &root.join(pc_name(index)),
                &shared,
            )?));
        }
        Ok(Links {
            origin,
            seed,
            root,
            shared,
            backend_injector,
            injectors,
            transports,
            agents: running,
            recorder,
            memory: memory.clone(),
            forged: 0,
            backend,
            backend_task,
            backend_down_until: Duration::ZERO,
            partitioned_until: vec![Duration::ZERO; agents],
            broker_down_until: Duration::ZERO,
            crashes: Vec::new(),
        })
    }

    /// Applies the fault timeline; hands the links back at the end.
    pub(crate) async fn drive(
        mut self,
        steps: Vec<(Duration, Step)>,
        applied: tokio::sync::watch::Sender<Duration>,
    ) -> Result<Links, SimError> {
        let next_at: Vec<Duration> = steps
            .iter()
            .skip(1)
            .map(|(at, _)| *at)
            .chain([Duration::MAX])
            .collect();
        for ((at, step), next) in steps.into_iter().zip(next_at) {
            tokio::time::sleep_until(self.origin + at).await;
            match step {
                Step::Fault(fault) => self.apply(fault).await?,
                Step::Reconnect => self.reconnect(),
                Step::Calm => {
                    trace_line(
                        &self.recorder,
                        self.origin,
                        "faults end; network calm".into(),
                    );
                    for injector in &self.injectors {
                        injector.set_plan(FaultPlan::Random(FaultRates::none(self.seed)));
                    }
                    self.partitioned_until.fill(Duration::ZERO);
                    self.broker_down_until = Duration::ZERO;
                    self.backend_down_until = Duration::ZERO;
                    self.reconnect();
                }
                Step::Fire(_) | Step::Revoke(_) | Step::Kill(_) => {}
            }
            applied.send_replace(next);
        }
        Ok(self)
    }

    async fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        trace_line(&self.recorder, self.origin, fault.to_string());
        let now = self.origin.elapsed();
        match fault {
            Fault::Partition { pc, for_, .. } if pc < self.agents.len() => {
                self.partitioned_until[pc] = self.partitioned_until[pc].max(now + for_);
                self.injectors[pc].disconnect();
            }
            Fault::CrashRestart { pc, .. } if pc < self.agents.len() => {
                self.crashes.push((pc, now));
                if let Some(sim) = self.agents[pc].take() {
                    sim.agent.halt();
                    let _ = sim.stop.send(());
                    let _ = sim.task.await;
                }
                self.agents[pc] = Some(start_agent(
                    pc,
                    self.transports[pc].clone(),
                    &self.root.join(pc_name(pc)),
                    &self.shared,
                )?);
            }
            Fault::BrokerRestart { for_, .. } => {
                self.broker_down_until = self.broker_down_until.max(now + for_);
                self.backend_injector.disconnect();
                for injector in &self.injectors {
                    injector.disconnect();
                }
            }
            Fault::BackendRestart { for_, .. } => {
                self.backend_down_until = self.backend_down_until.max(now + for_);
                if let Some(task) = self.backend_task.take() {
                    // As `kill -9`: every task stops where it is.
                    task.abort();
                    let _ = task.await;
                }
            }
            Fault::Forge { .. } => self.forge().await,
            Fault::ClockStep {
                pc, offset_secs, ..
            } if pc < self.agents.len() => {
                self.shared.clock_offsets[pc].store(
                    offset_secs.saturating_mul(1000),
                    std::sync::atomic::Ordering::SeqCst,
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Publishes one unsigned and one mis-signed command on
    /// `commands.all`, as an attacker's client would (straight on the bus).
    async fn forge(&mut self) {
        let attacker =
            kanade_core::policy::signature::CommandSigner::from_seed("sim-fleet", [0xA5; 32]);
        for signed in [false, true] {
            self.forged += 1;
            let request = format!(
                "{}{}-{}",
                crate::plan::FORGED_PREFIX,
                self.forged,
                if signed { "missigned" } else { "unsigned" }
            );
            let body = serde_json::json!({
                "id": "forged-job", "version": "1", "request_id": request,
                "shell": "sh", "script": "sleep=1;exit=0", "timeout_secs": 60,
            })
            .to_string();
            let headers = if signed {
                let at = self.shared.clock.now().timestamp_millis();
                attacker.sign(body.as_bytes(), at).into_iter().collect()
            } else {
                kanade_core::transport::Headers::new()
            };
            let _ = self
                .memory
                .messages()
                .publish("commands.all", headers, bytes::Bytes::from(body))
                .await;
        }
    }

    /// Brings back every link whose outages are all over.
    fn reconnect(&mut self) {
        let now = self.origin.elapsed();
        if self.backend_task.is_none() && now >= self.backend_down_until {
            trace_line(&self.recorder, self.origin, "backend starts again".into());
            self.backend_task = Some(spawn_backend(&self.backend));
        }
        if now >= self.broker_down_until {
            self.backend_injector.reconnect();
            for (injector, until) in self.injectors.iter().zip(&self.partitioned_until) {
                if now >= *until {
                    injector.reconnect();
                }
            }
        }
    }

    /// Stops every agent and waits for it.
    pub(crate) async fn stop_agents(&mut self) {
        for sim in self.agents.drain(..).flatten() {
            let _ = sim.stop.send(());
            let _ = sim.task.await;
        }
    }

    /// Per agent, when it could have missed a command.
    pub(crate) fn exposures(&self) -> Vec<Exposure> {
        self.injectors
            .iter()
            .enumerate()
            .map(|(index, injector)| {
                exposure(
                    self.origin,
                    &injector.timed_events(),
                    self.crashes
                        .iter()
                        .filter(|(pc, _)| *pc == index)
                        .map(|(_, at)| *at),
                )
            })
            .collect()
    }

    /// Faults the agents' injectors recorded.
    pub(crate) fn fault_events(&self) -> u64 {
        self.injectors
            .iter()
            .map(|i| i.timed_events().len() as u64)
            .sum::<u64>()
    }

    /// Every runner invocation so far.
    pub(crate) fn invocations(&self) -> Vec<Invocation> {
        self.shared.runner.invocations()
    }

    /// Removes the state directory.
    pub(crate) fn remove_state(&self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// When an agent could have missed a command: disconnected intervals,
/// dropped command deliveries, crashes.
fn exposure(
    origin: tokio::time::Instant,
    events: &[(tokio::time::Instant, FaultEvent)],
    crashes: impl Iterator<Item = Duration>,
) -> Exposure {
    let mut exposure = Exposure::default();
    let mut down_since = None;
    for (at, event) in events {
        let at = at.saturating_duration_since(origin);
        match event {
            FaultEvent::Disconnected => down_since = Some(at),
            FaultEvent::Reconnected => {
                if let Some(from) = down_since.take() {
                    exposure.offline.push((from, at));
                }
            }
            FaultEvent::Delivery {
                subject,
                fault: DeliveryFault::Drop,
            } if subject.starts_with("commands.") => exposure.instants.push(at),
            _ => {}
        }
    }
    if let Some(from) = down_since {
        exposure.offline.push((from, Duration::MAX));
    }
    exposure.instants.extend(crashes);
    exposure
}
