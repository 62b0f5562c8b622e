//! The fleet harness: a real [`Backend`] (SQLite, projectors, reaper, and
//! for fleet-days the [`Scheduler`]) and N real [`Agent`]s on one in-memory
//! bus, every client behind its own fault-injection layer, scripts run by a
//! [`SimRunner`], faults applied from a [`FaultSchedule`] on tokio time.
//! Every random choice (jitter, fault draws, job durations) comes from the
//! plan's seed, and the backend's clock and ids are simulated, so the same
//! plan gives the same trace.
//!
//! This module sets a fleet up and collects the outcome; the operator
//! (`operator`) and the fault driver (`faults`) run it, each on its own
//! timeline (`timeline`), both writing to the trace (`trace`).
//!
//! [`Agent`]: kanade_agent::Agent
//! [`SimRunner`]: crate::SimRunner
//! [`FaultSchedule`]: crate::FaultSchedule

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kanade_agent::{Clock, TokioClock};
use kanade_backend::{Backend, BackendSettings, Scheduler};
use kanade_core::names::{BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL};
use kanade_core::transport::fault::{FaultPlan, FaultRates, FaultyTransport};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{KvConfig, Transport};

use crate::agents::Shared;
use crate::error::SimError;
use crate::faults::{Links, LinksStart};
use crate::operator::Operator;
use crate::outcome::FleetOutcome;
use crate::plan::{sim_epoch, FleetPlan, JobKind, Workload, DRAIN};
use crate::runner::SimRunner;
use crate::timeline::Timeline;
use crate::trace::{record_bus, Recorder};

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
    operator: Operator,
}

impl Fleet {
    /// Runs `plan` to the end (workload done, faults over, [`DRAIN`]
    /// passed) and reports what happened. Call it on a current-thread
    /// runtime with paused time ([`simulate`] builds one).
    pub async fn run(plan: FleetPlan) -> Result<FleetOutcome, SimError> {
        let wall = std::time::Instant::now();
        let (mut fleet, links) = Self::start(plan).await?;
        let Timeline {
            workload,
            faults,
            calm,
        } = Timeline::of(&fleet.plan);
        let (applied, faults_applied) =
            tokio::sync::watch::channel(faults.first().map_or(Duration::MAX, |(at, _)| *at));
        fleet.operator.faults_applied = Some(faults_applied);
        let driver = tokio::spawn(links.drive(faults, applied));
        fleet
            .operator
            .run_workload(&fleet.plan.workload, workload)
            .await;
        let links = driver.await.map_err(SimError::FaultDriver)??;
        tokio::time::sleep_until(fleet.operator.origin + calm + DRAIN).await;
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
        std::fs::create_dir_all(&root).map_err(|source| SimError::StateRoot {
            path: root.clone(),
            source,
        })?;
        let origin = tokio::time::Instant::now();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(sim_epoch()));
        let memory = MemoryTransport::new();
        let recorder = Recorder::shared(plan.keep_trace);
        record_bus(&memory, recorder.clone(), origin)
            .await
            .map_err(SimError::transport("recorder"))?;

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
        // Its "crashes" are tasks and its file lives in RAM: no fsyncs.
        settings.database_durability = kanade_backend::db::DbDurability::Simulated;
        // Heartbeats stored on a second thread, in the same order.
        settings.database_write_behind = true;
        let signer = crate::plan::fleet_signer(plan.seed);
        settings.signer = Some(Arc::new(signer.clone()));
        let backend = Backend::open(Arc::new(backend_faulty), settings)
            .await
            .map_err(SimError::backend("backend"))?
            .with_clock(Arc::new(move || backend_clock.now()))
            .with_ids(Arc::new(move || {
                format!("sim-{:06}", ids.fetch_add(1, Ordering::SeqCst) + 1)
            }));

        let mut job_rng = fastrand::Rng::with_seed(plan.seed);
        let kinds: Vec<JobKind> = match plan.workload {
            Workload::Commands { .. } => JobKind::ROTATION.to_vec(),
            Workload::FleetDay { .. } => vec![JobKind::Hourly],
            Workload::Rollout { .. } => vec![JobKind::Rollout],
        };
        for kind in kinds {
            let (mut script, timeout) = kind.script(&mut job_rng);
            if let Workload::Rollout {
                failing_percent, ..
            } = &plan.workload
            {
                script = crate::plan::rollout_script(*failing_percent, plan.seed);
            }
            let yaml = format!(
                "id: {}\nversion: \"1\"\nexecute:\n  shell: sh\n  script: \"{script}\"\n  timeout: {timeout}\n",
                kind.job_id()
            );
            backend
                .apply_job(&yaml, &BTreeMap::new())
                .await
                .map_err(SimError::backend("job"))?;
        }
        if let Workload::FleetDay { heartbeat, hours } = plan.workload {
            let config = format!(
                "{{\"heartbeat_interval\":\"{}\"}}",
                humantime::format_duration(heartbeat)
            );
            memory
                .key_value(KvConfig::new(BUCKET_AGENT_CONFIG))
                .await
                .map_err(SimError::transport("agent_config"))?
                .put(KEY_AGENT_CONFIG_GLOBAL, config.into())
                .await
                .map_err(SimError::transport("agent_config"))?;
            let schedule = format!(
                "id: hourly\njob_id: {}\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\njitter: {}s\n",
                JobKind::Hourly.job_id(),
                JobKind::Hourly.jitter_secs()
            );
            backend
                .apply_schedule(&schedule)
                .await
                .map_err(SimError::backend("schedule"))?;
            let scheduler =
                Scheduler::with_clock(backend.clone(), backend.clock(), Duration::from_secs(10));
            let until = origin + Duration::from_secs(hours * 3600);
            // The fleet exists before the first fire: a brand-new agent
            // does not run what was sent before it first started.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                scheduler.run(tokio::time::sleep_until(until)).await;
            });
        }
        let shared = Shared {
            runner: SimRunner::new(clock.clone()),
            clock,
            seed: plan.seed,
            ring: kanade_core::policy::signature::KeyRing::from_entries(vec![
                signer.ring_entry(None, None)
            ])
            .map_err(|e| SimError::Runtime(std::io::Error::other(e.to_string())))?,
            verified: Arc::default(),
            clock_offsets: (0..plan.agents).map(|_| AtomicI64::new(0)).collect(),
            state_files: (0..plan.agents).map(|_| Arc::default()).collect(),
        };
        let links = Links::start(
            LinksStart {
                origin,
                seed: plan.seed,
                root,
                shared,
                backend_injector,
                backend: backend.clone(),
                recorder: recorder.clone(),
            },
            &memory,
            plan.faults.network,
            plan.agents,
        )?;
        let fleet = Fleet {
            plan,
            operator: Operator::new(origin, backend, recorder),
        };
        Ok((fleet, links))
    }

    async fn finish(self, mut links: Links, wall: std::time::Instant) -> FleetOutcome {
        let operator = self.operator;
        let simulated = operator.origin.elapsed();
        links.stop_agents().await;
        let db = operator.backend.db().clone();
        let counted = db.clone();
        let (executions, results, rollouts) = tokio::task::spawn_blocking(move || {
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
            let rollouts = executions
                .iter()
                .filter_map(|e| {
                    let row = db.rollout(&e.exec_id).ok()??;
                    let targets = db.rollout_targets(&e.exec_id).unwrap_or_default();
                    Some(crate::rollout_record::RolloutRecord { row, targets })
                })
                .collect::<Vec<_>>();
            (executions, results, rollouts)
        })
        .await
        .unwrap_or_default();
        // Read after the snapshot: the backend's tasks ran until then.
        let database_rollbacks = counted.unjournaled_rollbacks();
        let exposures = links.exposures();
        let fault_events = links.fault_events();
        links.remove_state();
        let (trace, messages, trace_hash) = Recorder::take(&operator.recorder).into_parts();
        FleetOutcome {
            agents: self.plan.agents,
            seed: self.plan.seed,
            schedule: self.plan.faults.clone(),
            executions,
            results,
            rollouts,
            invocations: links.invocations(),
            operations: operator.operations,
            exposures,
            messages,
            fault_events,
            database_rollbacks,
            trace,
            trace_hash,
            simulated,
            wall: wall.elapsed(),
        }
    }
}

/// Runs `plan` on a fresh current-thread runtime with paused time.
///
/// The outcome is complete when this returns; the runtime (every agent's
/// and the backend's tasks, which own the fleet's memory) is then dropped
/// on a thread of its own, as that takes a third of a second at 10,000
/// agents and nothing in the outcome depends on it.
pub fn simulate(plan: FleetPlan) -> Result<FleetOutcome, SimError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(SimError::Runtime)?;
    let outcome = runtime.block_on(Fleet::run(plan));
    drop_elsewhere(runtime);
    outcome
}

/// Drops `runtime` on a new thread (or here, when none can be started:
/// a thread that fails to start drops what it was given).
fn drop_elsewhere(runtime: tokio::runtime::Runtime) {
    let _ = std::thread::Builder::new()
        .name("kanade-sim-drop".into())
        .spawn(move || drop(runtime));
}
