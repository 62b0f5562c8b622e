//! The fleet harness: a real [`Backend`] (SQLite, projectors, reaper, and
//! for fleet-days the [`Scheduler`]) and N real [`Agent`]s on one in-memory
//! bus, every client behind its own fault-injection layer, scripts run by a
//! [`SimRunner`], faults applied from a [`FaultSchedule`] on tokio time.
//! Every random choice (jitter, fault draws, job durations) comes from the
//! plan's seed, and the backend's clock and ids are simulated, so the same
//! plan gives the same trace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kanade_agent::{Agent, AgentSettings, Clock, TokioClock};
use kanade_backend::manifest::Target;
use kanade_backend::{Backend, BackendSettings, FireOptions, Scheduler};
use kanade_core::names::{SubjectToken, BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL};
use kanade_core::transport::fault::{DeliveryFault, FaultyTransport};
use kanade_core::transport::fault::{FaultEvent, FaultInjector, FaultPlan, FaultRates};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{KvConfig, Transport};
use kanade_core::wire::{ExecResult, RetrySpec};
use sha2::{Digest, Sha256};

use crate::outcome::{Exposure, FleetOutcome, Operation};
use crate::runner::SimRunner;
use crate::schedule::{pc_name, Fault, FaultSchedule};

/// The jobs a simulation fires, each with its expected behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    /// Runs for a seeded time and exits with a seeded code (sometimes with
    /// output big enough to overflow into the object store).
    Work,
    /// Always exits 3; retried twice (`1 + 2` attempts).
    Flaky,
    /// Runs for 90 s with retries allowed; killed 15 s after it is fired.
    Killed,
    /// Fired with a start deadline already past: skipped with 125.
    Late,
    /// Revoked before it is fired: skipped with 126.
    Revoked,
    /// Fired with 30 s of jitter and revoked 5.5 s later: an agent whose
    /// jitter had not ended skips it with 126.
    RevokedInJitter,
    /// The fleet-day's hourly job, fired by the scheduler.
    Hourly,
}

impl JobKind {
    /// The rotation of a commands workload.
    pub const ROTATION: [JobKind; 6] = [
        JobKind::Work,
        JobKind::Flaky,
        JobKind::Killed,
        JobKind::Late,
        JobKind::Revoked,
        JobKind::RevokedInJitter,
    ];

    /// The job's id in the backend.
    pub fn job_id(self) -> &'static str {
        match self {
            JobKind::Work => "sim-work",
            JobKind::Flaky => "sim-flaky",
            JobKind::Killed => "sim-killed",
            JobKind::Late => "sim-late",
            JobKind::Revoked => "sim-revoked",
            JobKind::RevokedInJitter => "sim-revoked-in-jitter",
            JobKind::Hourly => "sim-hourly",
        }
    }

    /// The kind of a job id.
    pub fn from_job_id(id: &str) -> Option<JobKind> {
        Self::ROTATION
            .into_iter()
            .chain([JobKind::Hourly])
            .find(|kind| kind.job_id() == id)
    }

    /// Retries allowed after the first attempt.
    pub fn retries(self) -> u32 {
        self.retry().map_or(0, |r| r.max)
    }

    fn retry(self) -> Option<RetrySpec> {
        match self {
            JobKind::Flaky => Some(RetrySpec {
                max: 2,
                backoff_secs: 1,
            }),
            JobKind::Killed => Some(RetrySpec {
                max: 3,
                backoff_secs: 1,
            }),
            _ => None,
        }
    }

    fn jitter_secs(self) -> u64 {
        match self {
            JobKind::RevokedInJitter => 30,
            JobKind::Hourly => 300,
            _ => 5,
        }
    }

    /// `(script, timeout)` with seeded parameters.
    fn script(self, rng: &mut fastrand::Rng) -> (String, &'static str) {
        match self {
            JobKind::Work => {
                let out = if rng.bool() { 300_000 } else { 0 };
                (
                    format!(
                        "sleep={};exit={};out_bytes={out}",
                        rng.u64(0..20),
                        rng.u8(0..3)
                    ),
                    "60s",
                )
            }
            JobKind::Flaky => ("sleep=1;exit=3".into(), "30s"),
            JobKind::Killed => ("sleep=90;exit=0".into(), "2m"),
            JobKind::Late | JobKind::Revoked => ("exit=0".into(), "30s"),
            JobKind::RevokedInJitter => ("sleep=2;exit=0".into(), "30s"),
            JobKind::Hourly => (
                format!("sleep={};exit=0;out_bytes=200", rng.u64(1..120)),
                "10m",
            ),
        }
    }
}

/// What the fleet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `count` executions on every agent, one every 10 s, rotating over
    /// [`JobKind::ROTATION`] (the property workload).
    Commands {
        /// How many.
        count: usize,
    },
    /// A scheduled fleet-day: the backend's scheduler fires an hourly job
    /// on every agent for `hours`; agents heartbeat every `heartbeat`.
    FleetDay {
        /// Simulated hours.
        hours: u64,
        /// Heartbeat interval (set live through `agent_config`).
        heartbeat: Duration,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Number of agents.
    pub agents: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Faults to inject.
    pub faults: FaultSchedule,
    /// What the fleet does.
    pub workload: Workload,
    /// Keep the trace lines (not only their hash) in the outcome.
    pub keep_trace: bool,
    /// Where agents' state directories and the backend's database go
    /// (default: `/dev/shm` when present, else the temp dir). Removed at the end.
    pub state_root: Option<PathBuf>,
}

impl FleetPlan {
    /// The property workload: `commands` executions on `agents` agents.
    pub fn commands(agents: usize, commands: usize, seed: u64, faults: FaultSchedule) -> Self {
        Self {
            agents,
            seed,
            faults,
            workload: Workload::Commands { count: commands },
            keep_trace: true,
            state_root: None,
        }
    }

    /// A scheduled fleet-day of `hours` with 5-minute heartbeats.
    pub fn fleet_day(agents: usize, hours: u64, seed: u64, faults: FaultSchedule) -> Self {
        Self {
            agents,
            seed,
            faults,
            workload: Workload::FleetDay {
                hours,
                heartbeat: Duration::from_secs(300),
            },
            keep_trace: false,
            state_root: None,
        }
    }
}

/// A simulation could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("simulation: {0}")]
pub struct SimError(pub String);

fn sim_err(context: &str, error: impl std::fmt::Display) -> SimError {
    SimError(format!("{context}: {error}"))
}

/// The simulated wall clock starts here.
pub fn sim_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Commands each simulated agent runs at once.
pub const SIM_CONCURRENCY: usize = 4;

/// How long after the faults end the fleet gets to settle (outbox
/// backoff, consumer redeliveries, the reaper's grace).
pub const DRAIN: Duration = Duration::from_secs(600);

struct SimAgent {
    agent: Agent,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    runner: Arc<SimRunner>,
    seed: u64,
}

fn start_agent(
    index: usize,
    transport: Arc<dyn Transport>,
    state: &Path,
    shared: &Shared,
) -> Result<SimAgent, SimError> {
    let pc = pc_name(index);
    let token = SubjectToken::pc(pc.clone()).map_err(|e| sim_err("pc id", e))?;
    let mut settings = AgentSettings::new(token, state);
    settings.inventory = false;
    settings.replay = true;
    settings.jitter_seed = Some(shared.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    // Not the host's CPU count: the same plan behaves the same anywhere.
    settings.default_concurrency = Some(SIM_CONCURRENCY);
    let agent = Agent::builder(settings, transport)
        .runner(shared.runner.for_agent(&pc))
        .clock(shared.clock.clone())
        .build()
        .map_err(|e| sim_err("agent", e))?;
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

/// Something the harness does at a point in simulated time.
#[derive(Debug, Clone)]
enum Step {
    Fire(usize),
    Revoke(usize),
    Kill(usize),
    Fault(Fault),
    Reconnect,
    Calm,
}

/// Trace and message counts, fed by a subscription to every subject and
/// by the harness. Everything runs on one thread in a fixed order (the
/// backend's database calls run inline), so the lines come in the same
/// order for the same plan.
#[derive(Default)]
struct Recorder {
    lines: Vec<String>,
    keep: bool,
    hasher: Sha256,
    messages: BTreeMap<String, u64>,
}

impl Recorder {
    fn line(&mut self, at: u128, line: String) {
        let line = format!("{at} {line}");
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if self.keep {
            self.lines.push(line);
        }
    }
}

/// Default place for simulation state: RAM-backed when available.
fn default_state_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// A simulated fleet: the operator side (backend, workload).
pub struct Fleet {
    plan: FleetPlan,
    origin: tokio::time::Instant,
    backend: Backend,
    recorder: Arc<Mutex<Recorder>>,
    operations: Vec<Operation>,
    /// The instant of the fault driver's next step: every fault before it
    /// has been applied.
    faults_applied: Option<tokio::sync::watch::Receiver<Duration>>,
}

/// The fault side: every client's link and the agents' lives. Driven by its
/// own task so an operator retrying through an outage never holds up the
/// end of that outage.
struct Links {
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
}

fn trace_line(recorder: &Mutex<Recorder>, origin: tokio::time::Instant, line: String) {
    let at = origin.elapsed().as_millis();
    recorder
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .line(at, line);
}

impl Fleet {
    /// Runs `plan` to the end (workload done, faults over, [`DRAIN`]
    /// passed) and reports what happened. Call it on a current-thread
    /// runtime with paused time ([`simulate`] builds one).
    pub async fn run(plan: FleetPlan) -> Result<FleetOutcome, SimError> {
        let wall = std::time::Instant::now();
        let (mut fleet, links) = Self::start(plan).await?;
        let (workload, faults, calm) = fleet.steps();
        let (applied, faults_applied) =
            tokio::sync::watch::channel(faults.first().map_or(Duration::MAX, |(at, _)| *at));
        fleet.faults_applied = Some(faults_applied);
        let driver = tokio::spawn(links.drive(faults, applied));
        fleet.run_workload(workload).await;
        let links = driver
            .await
            .map_err(|e| SimError(format!("fault driver: {e}")))??;
        tokio::time::sleep_until(fleet.origin + calm + DRAIN).await;
        Ok(fleet.finish(links, wall).await)
    }

    async fn start(plan: FleetPlan) -> Result<(Fleet, Links), SimError> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let root = plan
            .state_root
            .clone()
            .unwrap_or_else(default_state_root)
            .join(format!(
                "kanade-sim-{}-{}-{}",
                std::process::id(),
                plan.seed,
                RUNS.fetch_add(1, Ordering::SeqCst)
            ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| sim_err("state root", e))?;
        let origin = tokio::time::Instant::now();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(sim_epoch()));
        let memory = MemoryTransport::new();
        let recorder = Arc::new(Mutex::new(Recorder {
            keep: plan.keep_trace,
            ..Recorder::default()
        }));
        let mut all = memory
            .messages()
            .subscribe(">")
            .await
            .map_err(|e| sim_err("recorder", e))?;
        {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                while let Some(message) = all.next().await {
                    let at = origin.elapsed().as_millis();
                    let kind = message.subject.split('.').next().unwrap_or("").to_owned();
                    let mut recorder = recorder.lock().unwrap_or_else(|p| p.into_inner());
                    *recorder.messages.entry(kind).or_default() += 1;
                    let result = message
                        .subject
                        .starts_with("results.")
                        .then(|| serde_json::from_slice::<ExecResult>(&message.payload).ok())
                        .flatten();
                    let detail = result.map_or_else(String::new, |r| {
                        format!(
                            " {} {} exit {} skipped {} attempts {}",
                            r.request_id, r.pc_id, r.exit_code, r.skipped, r.attempts
                        )
                    });
                    recorder.line(at, format!("{}{detail}", message.subject));
                }
            });
        }

        let backend_faulty = FaultyTransport::new(
            Arc::new(memory.clone()),
            FaultPlan::Random(FaultRates::none(plan.seed)),
        );
        let backend_injector = backend_faulty.injector();
        let ids = Arc::new(AtomicU64::new(0));
        let backend_clock = clock.clone();
        let mut settings = BackendSettings::new(root.join("backend.sqlite"));
        if let Workload::FleetDay { heartbeat, .. } = plan.workload {
            // Online means a heartbeat within three intervals.
            settings.online_window = settings.online_window.max(heartbeat * 3);
        }
        // One thread, no hand-offs: database calls in a fixed order.
        settings.inline_database = true;
        let backend = Backend::open(Arc::new(backend_faulty), settings)
            .await
            .map_err(|e| sim_err("backend", e))?
            .with_clock(Arc::new(move || backend_clock.now()))
            .with_ids(Arc::new(move || {
                format!("sim-{:06}", ids.fetch_add(1, Ordering::SeqCst) + 1)
            }));

        let mut job_rng = fastrand::Rng::with_seed(plan.seed);
        let kinds: Vec<JobKind> = match plan.workload {
            Workload::Commands { .. } => JobKind::ROTATION.to_vec(),
            Workload::FleetDay { .. } => vec![JobKind::Hourly],
        };
        for kind in kinds {
            let (script, timeout) = kind.script(&mut job_rng);
            let yaml = format!(
                "id: {}\nversion: \"1\"\nexecute:\n  shell: sh\n  script: \"{script}\"\n  timeout: {timeout}\n",
                kind.job_id()
            );
            backend
                .apply_job(&yaml, &BTreeMap::new())
                .await
                .map_err(|e| sim_err("job", e))?;
        }
        if let Workload::FleetDay { heartbeat, hours } = plan.workload {
            let config = format!(
                "{{\"heartbeat_interval\":\"{}\"}}",
                humantime::format_duration(heartbeat)
            );
            memory
                .key_value(KvConfig::new(BUCKET_AGENT_CONFIG))
                .await
                .map_err(|e| sim_err("agent_config", e))?
                .put(KEY_AGENT_CONFIG_GLOBAL, config.into())
                .await
                .map_err(|e| sim_err("agent_config", e))?;
            let schedule = format!(
                "id: hourly\njob_id: {}\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\njitter: {}s\n",
                JobKind::Hourly.job_id(),
                JobKind::Hourly.jitter_secs()
            );
            backend
                .apply_schedule(&schedule)
                .await
                .map_err(|e| sim_err("schedule", e))?;
            let scheduler =
                Scheduler::with_clock(backend.clone(), backend.clock(), Duration::from_secs(10));
            let until = origin + Duration::from_secs(hours * 3600);
            tokio::spawn(scheduler.run(tokio::time::sleep_until(until)));
        }
        {
            let running = backend.clone();
            tokio::spawn(async move {
                let _ = running.run(std::future::pending::<()>()).await;
            });
        }

        let shared = Shared {
            runner: SimRunner::new(clock.clone()),
            clock,
            seed: plan.seed,
        };
        let mut injectors = Vec::with_capacity(plan.agents);
        let mut transports: Vec<Arc<dyn Transport>> = Vec::with_capacity(plan.agents);
        let mut agents = Vec::with_capacity(plan.agents);
        for index in 0..plan.agents {
            let faulty = FaultyTransport::new(
                Arc::new(memory.clone()),
                FaultPlan::Random(
                    plan.faults
                        .network
                        .to_fault_rates(plan.seed ^ (index as u64 + 1)),
                ),
            );
            injectors.push(faulty.injector());
            let transport: Arc<dyn Transport> = Arc::new(faulty);
            transports.push(transport.clone());
            agents.push(Some(start_agent(
                index,
                transport,
                &root.join(pc_name(index)),
                &shared,
            )?));
        }
        let links = Links {
            origin,
            seed: plan.seed,
            root,
            shared,
            backend_injector,
            injectors,
            transports,
            agents,
            recorder: recorder.clone(),
            partitioned_until: vec![Duration::ZERO; plan.agents],
            broker_down_until: Duration::ZERO,
            crashes: Vec::new(),
        };
        let fleet = Fleet {
            plan,
            origin,
            backend,
            recorder,
            operations: Vec::new(),
            faults_applied: None,
        };
        Ok((fleet, links))
    }

    fn trace(&self, line: String) {
        trace_line(&self.recorder, self.origin, line);
    }

    /// The harness's timelines (workload, faults) and when the faults end.
    #[allow(clippy::type_complexity)]
    fn steps(&self) -> (Vec<(Duration, Step)>, Vec<(Duration, Step)>, Duration) {
        let mut steps = Vec::new();
        let mut workload_ends = Duration::ZERO;
        if let Workload::Commands { count } = self.plan.workload {
            for c in 0..count {
                let at = Duration::from_secs(5 + 10 * c as u64);
                steps.push((at, Step::Fire(c)));
                match JobKind::ROTATION[c % JobKind::ROTATION.len()] {
                    JobKind::Killed => steps.push((at + Duration::from_secs(15), Step::Kill(c))),
                    JobKind::RevokedInJitter => {
                        steps.push((at + Duration::from_millis(5_500), Step::Revoke(c)))
                    }
                    _ => {}
                }
                workload_ends = at + Duration::from_secs(15);
            }
        }
        if let Workload::FleetDay { hours, .. } = self.plan.workload {
            workload_ends = Duration::from_secs(hours * 3600);
        }
        for fault in self.plan.faults.in_order() {
            let ends = fault.ends();
            steps.push((fault.at(), Step::Fault(fault)));
            if ends > Duration::ZERO {
                steps.push((ends, Step::Reconnect));
            }
        }
        let calm = workload_ends.max(self.plan.faults.last_fault_ends());
        steps.push((calm, Step::Calm));
        // Stable: steps at one instant keep the order above.
        steps.sort_by_key(|(at, _)| *at);
        let (faults, workload) = steps
            .into_iter()
            .partition(|(_, step)| matches!(step, Step::Fault(_) | Step::Reconnect | Step::Calm));
        (workload, faults, calm)
    }

    /// Waits until the fault driver has applied every fault due by now, so
    /// an operator action and a fault at the same instant always meet in
    /// the same order (faults first).
    async fn after_faults_of_this_instant(&self) {
        let now = self.origin.elapsed();
        if let Some(applied) = &self.faults_applied {
            let mut applied = applied.clone();
            let _ = applied.wait_for(|next| *next > now).await;
        }
    }

    async fn run_workload(&mut self, steps: Vec<(Duration, Step)>) {
        self.revoke_up_front().await;
        let mut fired: BTreeMap<usize, String> = BTreeMap::new();
        for (at, step) in steps {
            tokio::time::sleep_until(self.origin + at).await;
            self.after_faults_of_this_instant().await;
            match step {
                Step::Fire(c) => {
                    if let Some(exec_id) = self.fire(c).await {
                        fired.insert(c, exec_id);
                    }
                }
                Step::Revoke(c) => {
                    let job = JobKind::RevokedInJitter.job_id();
                    if self.operate(|b| async move { b.revoke(job).await }).await {
                        self.note(fired.get(&c), "revoked");
                    }
                }
                Step::Kill(c) => {
                    if let Some(exec_id) = fired.get(&c).cloned() {
                        let id = exec_id.clone();
                        if self
                            .operate(|b| {
                                let id = id.clone();
                                async move { b.kill(&id).await }
                            })
                            .await
                        {
                            self.note(Some(&exec_id), "killed");
                        }
                    }
                }
                Step::Fault(_) | Step::Reconnect | Step::Calm => {}
            }
        }
    }

    async fn revoke_up_front(&mut self) {
        if !matches!(self.plan.workload, Workload::Commands { .. }) {
            return;
        }
        let job = JobKind::Revoked.job_id();
        if self.operate(|b| async move { b.revoke(job).await }).await {
            self.trace(format!("revoked {job}"));
        }
    }

    fn note(&mut self, exec_id: Option<&String>, what: &'static str) {
        let at = self.origin.elapsed();
        if let Some(exec_id) = exec_id {
            self.trace(format!("{what} {exec_id}"));
            self.operations.push(Operation {
                exec_id: exec_id.clone(),
                what,
                at,
            });
        }
    }

    /// Runs a backend operation, retrying every second for up to a minute
    /// while the broker is away (as an operator would). Returns whether it
    /// went through.
    async fn operate<F, Fut>(&self, operation: F) -> bool
    where
        F: Fn(Backend) -> Fut,
        Fut: std::future::Future<Output = Result<(), kanade_backend::BackendError>>,
    {
        for _ in 0..60 {
            self.after_faults_of_this_instant().await;
            match operation(self.backend.clone()).await {
                Ok(()) => return true,
                Err(e) => {
                    self.trace(format!("operation failed, retrying: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        false
    }

    async fn fire(&mut self, c: usize) -> Option<String> {
        let kind = JobKind::ROTATION[c % JobKind::ROTATION.len()];
        if kind == JobKind::RevokedInJitter {
            let job = kind.job_id();
            self.operate(|b| async move { b.activate(job).await }).await;
        }
        let target = Target {
            all: true,
            ..Target::default()
        };
        for _ in 0..60 {
            let options = FireOptions {
                deadline_at: (kind == JobKind::Late)
                    .then(|| self.backend.now() - chrono::Duration::seconds(1)),
                retry: kind.retry(),
                jitter_secs: Some(kind.jitter_secs()),
                exec_id: None,
            };
            self.after_faults_of_this_instant().await;
            match self.backend.fire(kind.job_id(), &target, options).await {
                Ok(row) => {
                    self.trace(format!(
                        "fired {} {} targeting {}",
                        row.job_id, row.exec_id, row.targeted
                    ));
                    return Some(row.exec_id);
                }
                Err(e) => {
                    self.trace(format!("fire of {} failed, retrying: {e}", kind.job_id()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        None
    }

    async fn finish(self, mut links: Links, wall: std::time::Instant) -> FleetOutcome {
        let simulated = self.origin.elapsed();
        for sim in links.agents.drain(..).flatten() {
            let _ = sim.stop.send(());
            let _ = sim.task.await;
        }
        let db = self.backend.db().clone();
        let (executions, results) = tokio::task::spawn_blocking(move || {
            let executions = db.executions().unwrap_or_default();
            let results = executions
                .iter()
                .map(|e| {
                    (
                        e.exec_id.clone(),
                        db.results(&e.exec_id).unwrap_or_default(),
                    )
                })
                .collect::<BTreeMap<_, _>>();
            (executions, results)
        })
        .await
        .unwrap_or_default();
        let exposures = links
            .injectors
            .iter()
            .enumerate()
            .map(|(index, injector)| {
                exposure(
                    self.origin,
                    &injector.timed_events(),
                    links
                        .crashes
                        .iter()
                        .filter(|(pc, _)| *pc == index)
                        .map(|(_, at)| *at),
                )
            })
            .collect();
        let fault_events = links
            .injectors
            .iter()
            .map(|i| i.timed_events().len() as u64)
            .sum::<u64>();
        let _ = std::fs::remove_dir_all(&links.root);
        let recorder =
            std::mem::take(&mut *self.recorder.lock().unwrap_or_else(|p| p.into_inner()));
        FleetOutcome {
            agents: self.plan.agents,
            seed: self.plan.seed,
            schedule: self.plan.faults.clone(),
            executions,
            results,
            invocations: links.shared.runner.invocations(),
            operations: self.operations,
            exposures,
            messages: recorder.messages,
            fault_events,
            trace: recorder.lines,
            trace_hash: format!("{:x}", recorder.hasher.finalize()),
            simulated,
            wall: wall.elapsed(),
        }
    }
}

impl Links {
    /// Applies the fault timeline; hands the links back at the end.
    async fn drive(
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
            _ => {}
        }
        Ok(())
    }

    /// Brings back every link whose outages are all over.
    fn reconnect(&self) {
        let now = self.origin.elapsed();
        if now >= self.broker_down_until {
            self.backend_injector.reconnect();
            for (injector, until) in self.injectors.iter().zip(&self.partitioned_until) {
                if now >= *until {
                    injector.reconnect();
                }
            }
        }
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

/// Runs `plan` on a fresh current-thread runtime with paused time.
pub fn simulate(plan: FleetPlan) -> Result<FleetOutcome, SimError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| sim_err("runtime", e))?
        .block_on(Fleet::run(plan))
}
