//! Deterministic fleet simulation: N real agents over one in-memory
//! transport, each behind its own fault-injection layer, scripts run by a
//! [`SimRunner`], a readable [`FaultSchedule`] applied on tokio time, and a
//! trace whose hash is the same for the same inputs. Run it on a
//! current-thread runtime with paused time.
//!
//! ```
//! use kanade_agent::sim::{Fault, FaultSchedule, Fleet, FleetPlan};
//! use std::time::Duration;
//!
//! let schedule = FaultSchedule(vec![Fault::Partition { at: Duration::from_secs(2), pc: 1, for_: Duration::from_secs(5) }]);
//! assert_eq!(schedule.to_string(), "at 2s: partition pc-0001 for 5s");
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
//! let outcome = runtime.block_on(Fleet::run(FleetPlan { agents: 3, commands: 4, seed: 7, faults: schedule }));
//! // Cut off for less than the 10 s between commands: nothing is superseded.
//! assert!(outcome.lost_or_duplicated().is_empty());
//! println!("trace hash {}", outcome.trace_hash());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use kanade_core::names::SubjectToken;
use kanade_core::transport::fault::{FaultInjector, FaultPlan, FaultRates, FaultyTransport};
use kanade_core::transport::memory::{MemorySettings, MemoryTransport};
use kanade_core::transport::{Headers, KvConfig, Transport};
use kanade_core::wire::{ExecResult, Shell};
use sha2::{Digest, Sha256};

use crate::{
    Agent, AgentSettings, KillSignal, RunEnd, RunOutput, RunSpec, ScriptRunner, TokioClock,
};

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut one agent off the network for a while.
    Partition {
        /// When (simulated time from the start).
        at: Duration,
        /// Which agent (index).
        pc: usize,
        /// How long.
        for_: Duration,
    },
    /// Kill one agent as if its process died and start it again on the
    /// same state directory.
    CrashRestart {
        /// When.
        at: Duration,
        /// Which agent.
        pc: usize,
    },
}

impl Fault {
    fn at(&self) -> Duration {
        match self {
            Fault::Partition { at, .. } | Fault::CrashRestart { at, .. } => *at,
        }
    }
}

/// Agent names in simulations.
pub fn pc_name(index: usize) -> String {
    format!("pc-{index:04}")
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { at, pc, for_ } => write!(
                f,
                "at {}: partition {} for {}",
                humantime::format_duration(*at),
                pc_name(*pc),
                humantime::format_duration(*for_)
            ),
            Fault::CrashRestart { at, pc } => {
                write!(
                    f,
                    "at {}: crash-restart {} (state dir kept)",
                    humantime::format_duration(*at),
                    pc_name(*pc)
                )
            }
        }
    }
}

/// A list of faults, printed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSchedule(pub Vec<Fault>);

impl fmt::Display for FaultSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut faults = self.0.clone();
        faults.sort_by_key(Fault::at);
        let lines: Vec<String> = faults.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Runs "scripts" without processes: `sleep=<secs>;exit=<code>`, and
/// counts invocations per (pc, request) to catch double runs.
#[derive(Default)]
pub struct SimRunner {
    invocations: Mutex<HashMap<(String, String), u32>>,
    total: AtomicU32,
}

/// The runner an agent uses: the shared [`SimRunner`] plus who it is.
struct AgentRunner {
    shared: Arc<SimRunner>,
    pc: String,
}

/// Reads `key=<number>` from a simulated script written as `k=v;k=v`.
pub fn script_field(script: &str, key: &str) -> Option<u64> {
    script
        .split(';')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

#[async_trait]
impl ScriptRunner for AgentRunner {
    fn supports(&self, shell: Shell) -> bool {
        matches!(shell, Shell::Sh | Shell::Bash)
    }

    async fn run(&self, spec: RunSpec, mut kill: KillSignal) -> RunOutput {
        let request = script_field(&spec.script, "req")
            .map(|r| r.to_string())
            .unwrap_or_default();
        *self
            .shared
            .invocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((self.pc.clone(), request))
            .or_default() += 1;
        self.shared.total.fetch_add(1, Ordering::SeqCst);
        let started_at = Utc::now();
        let sleep = Duration::from_secs(script_field(&spec.script, "sleep").unwrap_or(0));
        let killed = async {
            while !*kill.borrow_and_update() {
                if kill.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let end = tokio::select! {
            biased;
            _ = tokio::time::sleep(sleep) => RunEnd::Exited(script_field(&spec.script, "exit").unwrap_or(0) as i32),
            _ = tokio::time::sleep(spec.timeout) => RunEnd::TimedOut,
            _ = killed => RunEnd::Killed,
        };
        RunOutput {
            end,
            stdout: Vec::new(),
            stderr: Vec::new(),
            started_at,
            finished_at: Utc::now(),
        }
    }
}

impl SimRunner {
    /// Runs per (pc, request number).
    pub fn invocations(&self) -> HashMap<(String, String), u32> {
        self.invocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Number of agents.
    pub agents: usize,
    /// Commands sent to `commands.all`, one every 10 s.
    pub commands: usize,
    /// Seed for jitter, faults and durations.
    pub seed: u64,
    /// Faults to inject.
    pub faults: FaultSchedule,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// Distinct results seen, keyed by `result_id` (as the backend stores them).
    pub results: BTreeMap<String, ExecResult>,
    /// Deliveries of each `result_id` (duplicates are expected: the store dedups).
    pub deliveries: BTreeMap<String, u32>,
    /// Runner invocations per (pc, request).
    pub invocations: HashMap<(String, String), u32>,
    /// The ordered event trace.
    pub trace: Vec<String>,
    /// Agents and commands simulated.
    pub agents: usize,
    /// Commands sent.
    pub commands: usize,
}

impl FleetOutcome {
    /// sha256 of the trace.
    pub fn trace_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for line in &self.trace {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        format!("{:x}", hasher.finalize())
    }

    /// (request, pc) pairs without exactly one stored result.
    pub fn lost_or_duplicated(&self) -> Vec<(String, String, usize)> {
        let mut per_pair: BTreeMap<(String, String), usize> = BTreeMap::new();
        for result in self.results.values() {
            *per_pair
                .entry((result.request_id.clone(), result.pc_id.clone()))
                .or_default() += 1;
        }
        let mut bad = Vec::new();
        for c in 0..self.commands {
            for a in 0..self.agents {
                let key = (format!("req-{c}"), pc_name(a));
                let n = per_pair.get(&key).copied().unwrap_or(0);
                if n != 1 {
                    bad.push((key.0, key.1, n));
                }
            }
        }
        bad
    }
}

struct SimAgent {
    agent: Agent,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn start_agent(
    index: usize,
    transport: Arc<dyn Transport>,
    state: &std::path::Path,
    runner: &Arc<SimRunner>,
    seed: u64,
) -> Result<SimAgent, crate::AgentError> {
    let pc = pc_name(index);
    let mut settings = AgentSettings::new(
        SubjectToken::pc(pc.clone()).map_err(|e| crate::AgentError::Config(e.to_string()))?,
        state,
    );
    settings.inventory = false;
    settings.replay = true;
    settings.jitter_seed = Some(seed ^ index as u64);
    let agent = Agent::builder(settings, transport)
        .runner(Arc::new(AgentRunner {
            shared: runner.clone(),
            pc,
        }))
        .clock(Arc::new(TokioClock::starting_at(
            Utc.timestamp_opt(1_780_000_000, 0)
                .single()
                .unwrap_or_default(),
        )))
        .build()?;
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

/// A simulated fleet.
pub struct Fleet;

impl Fleet {
    /// Runs `plan` to completion (every command sent, every fault over, and
    /// time for backlogs to drain) and reports what happened.
    pub async fn run(plan: FleetPlan) -> FleetOutcome {
        let memory = MemoryTransport::with_settings(MemorySettings::default());
        let runner = Arc::new(SimRunner::default());
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!(
            "kanade-sim-{}-{}-{run}",
            std::process::id(),
            plan.seed
        ));
        // EXEC keeps the latest command per subject: the replay source for
        // agents that were cut off.
        let _ = memory
            .messages()
            .create_stream(kanade_core::transport::StreamConfig::from_spec(
                &kanade_core::names::StreamSpec::EXEC,
            ))
            .await;
        let _ = std::fs::remove_dir_all(&root);
        let mut injectors: Vec<Arc<FaultInjector>> = Vec::new();
        let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
        let mut agents = Vec::new();
        for index in 0..plan.agents {
            let faulty = FaultyTransport::new(
                Arc::new(memory.clone()),
                FaultPlan::Random(FaultRates::none(plan.seed ^ index as u64)),
            );
            injectors.push(faulty.injector());
            let transport: Arc<dyn Transport> = Arc::new(faulty);
            transports.push(transport.clone());
            match start_agent(
                index,
                transport,
                &root.join(pc_name(index)),
                &runner,
                plan.seed,
            ) {
                Ok(agent) => agents.push(Some(agent)),
                Err(e) => panic!("simulated agent {index} did not start: {e}"),
            }
        }
        let log = memory.messages();
        let trace = Arc::new(Mutex::new(Vec::new()));
        let deliveries = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
        let results = Arc::new(Mutex::new(BTreeMap::<String, ExecResult>::new()));
        let mut subscription = match log.subscribe("results.*").await {
            Ok(sub) => sub,
            Err(e) => panic!("collector: {e}"),
        };
        let started = tokio::time::Instant::now();
        let collector = {
            let (trace, deliveries, results) = (trace.clone(), deliveries.clone(), results.clone());
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    if let Ok(result) = serde_json::from_slice::<ExecResult>(&message.payload) {
                        let at = started.elapsed().as_millis();
                        trace
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!(
                                "{at} result {} {} exit {} skipped {}",
                                result.request_id, result.pc_id, result.exit_code, result.skipped
                            ));
                        *deliveries
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(result.result_id.clone())
                            .or_default() += 1;
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(result.result_id.clone())
                            .or_insert(result);
                    }
                }
            })
        };
        // Revoke one job up front: its commands must be skipped with 126.
        if let Ok(kv) = memory.key_value(KvConfig::new("script_status")).await {
            let _ = kv.put("revoked-job", Bytes::from_static(b"REVOKED")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut faults = plan.faults.0.clone();
        faults.sort_by_key(Fault::at);
        let mut pending_faults = faults.into_iter().peekable();
        let mut reconnects: Vec<(Duration, usize)> = Vec::new();
        let horizon = Duration::from_secs(10 * plan.commands as u64 + 300);
        let mut next_command = 0usize;
        let mut rng = fastrand::Rng::with_seed(plan.seed);
        let step = Duration::from_secs(1);
        let mut now = Duration::ZERO;
        while now < horizon {
            // Commands every 10 s.
            if next_command < plan.commands && now >= Duration::from_secs(10 * next_command as u64)
            {
                let job = if next_command % 5 == 4 {
                    "revoked-job"
                } else {
                    "sim-job"
                };
                let command = serde_json::json!({
                    "id": job, "version": "1", "request_id": format!("req-{next_command}"),
                    "exec_id": format!("exec-{next_command}"), "shell": "sh",
                    "script": format!("req={next_command};sleep={};exit={}", rng.u64(0..20), rng.u8(0..3)),
                    "timeout_secs": 600, "jitter_secs": 5,
                });
                if let Ok(payload) = serde_json::to_vec(&command) {
                    let _ = log
                        .publish("commands.all", Headers::new(), Bytes::from(payload))
                        .await;
                }
                trace
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "{} command req-{next_command} {job}",
                        now.as_millis()
                    ));
                next_command += 1;
            }
            while pending_faults.peek().is_some_and(|f| f.at() <= now) {
                let Some(fault) = pending_faults.next() else {
                    break;
                };
                trace
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(fault.to_string());
                match fault {
                    Fault::Partition { pc, for_, .. } if pc < plan.agents => {
                        injectors[pc].disconnect();
                        reconnects.push((now + for_, pc));
                    }
                    Fault::CrashRestart { pc, .. } if pc < plan.agents => {
                        if let Some(sim) = agents[pc].take() {
                            sim.agent.halt();
                            let _ = sim.stop.send(());
                            let _ = sim.task.await;
                        }
                        match start_agent(
                            pc,
                            transports[pc].clone(),
                            &root.join(pc_name(pc)),
                            &runner,
                            plan.seed,
                        ) {
                            Ok(agent) => agents[pc] = Some(agent),
                            Err(e) => panic!("restart of {pc} failed: {e}"),
                        }
                    }
                    _ => {}
                }
            }
            reconnects.retain(|(at, pc)| {
                if *at <= now {
                    injectors[*pc].reconnect();
                    false
                } else {
                    true
                }
            });
            tokio::time::sleep(step).await;
            now += step;
        }
        for (_, pc) in reconnects {
            injectors[pc].reconnect();
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        for sim in agents.into_iter().flatten() {
            let _ = sim.stop.send(());
            let _ = sim.task.await;
        }
        collector.abort();
        let _ = std::fs::remove_dir_all(&root);
        let outcome = FleetOutcome {
            results: results.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            deliveries: deliveries.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            invocations: runner.invocations(),
            trace: trace.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            agents: plan.agents,
            commands: plan.commands,
        };
        outcome
    }
}
