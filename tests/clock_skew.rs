//! Case 9 of the reliability issue: agents' own clocks no longer decide
//! online state or deadlines. The backend records an agent as seen when it
//! receives the heartbeat and keeps the agent's clock offset (flagged past
//! 30 s); an agent judges `deadline_at` by the backend's clock, estimated
//! from the `issued_at` of commands it receives live and never earlier than
//! a command's own issue time.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

mod common;
use common::{finished, run_agent, wait_for, wait_for_agent};
use kanade::agent::{Agent, AgentSettings, Clock};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings, FireOptions};
use kanade::core::names::SubjectToken;
use kanade::core::transport::fault::{FaultPlan, FaultRates, FaultyTransport};
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::Transport;

/// The system clock, `skew` off.
struct Skewed(chrono::Duration);

impl Clock for Skewed {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

struct Fleet {
    memory: MemoryTransport,
    backend: Backend,
    dir: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryTransport::new();
    let transport: Arc<dyn Transport> = Arc::new(memory.clone());
    let settings = BackendSettings::new(dir.path().join("backend.db"));
    let backend = common::running_backend_with_hello(transport, settings).await;
    Fleet {
        memory,
        backend,
        dir,
    }
}

impl Fleet {
    /// An agent `pc` whose clock is `skew_secs` off, on `transport`.
    fn agent(&self, pc: &str, skew_secs: i64, transport: Arc<dyn Transport>) -> Agent {
        let mut settings =
            AgentSettings::new(SubjectToken::pc(pc).unwrap(), self.dir.path().join(pc));
        settings.inventory = false;
        Agent::builder(settings, transport)
            .clock(Arc::new(Skewed(chrono::Duration::seconds(skew_secs))))
            .build()
            .unwrap()
    }

    /// Fires `hello` on `pc` with `deadline_at` `deadline_secs` from now
    /// (backend clock) and returns the execution.
    async fn fire(&self, pc: &str, deadline_secs: Option<i64>) -> String {
        let options = FireOptions {
            deadline_at: deadline_secs.map(|s| Utc::now() + chrono::Duration::seconds(s)),
            ..FireOptions::default()
        };
        let target = Target {
            pcs: vec![pc.into()],
            ..Target::default()
        };
        self.backend
            .fire("hello", &target, options)
            .await
            .unwrap()
            .exec_id
    }

    fn outcome(&self, exec_id: &str, pc: &str) -> (i64, bool) {
        let rows = self.backend.db().results(exec_id).unwrap();
        let row = rows.iter().find(|r| r.pc_id == pc).unwrap();
        (row.exit_code, row.skipped)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_9_presence_is_the_backends_time_and_offsets_are_recorded() {
    let fleet = fleet().await;
    let memory: Arc<dyn Transport> = Arc::new(fleet.memory.clone());
    let mut running = Vec::new();
    for (pc, skew) in [
        ("slow", -180),
        ("fast", 600),
        ("true", 0),
        ("hour-slow", -3600),
    ] {
        running.push(run_agent(fleet.agent(pc, skew, memory.clone())));
    }
    for pc in ["slow", "fast", "true", "hour-slow"] {
        wait_for_agent(&fleet.backend, pc).await;
    }
    let agents = fleet
        .backend
        .db()
        .agents(fleet.backend.online_since())
        .unwrap();
    for (pc, skew_ms, skewed) in [
        ("slow", -180_000, true),
        ("fast", 600_000, true),
        ("true", 0, false),
        ("hour-slow", -3_600_000, true),
    ] {
        let row = agents.iter().find(|a| a.pc_id == pc).unwrap();
        assert!(row.online, "{pc} is online whatever its clock: {row:?}");
        let offset = row.clock_offset_ms.unwrap();
        assert!((offset - skew_ms).abs() < 5_000, "{pc}: {offset} ms");
        assert_eq!(row.clock_skewed, skewed, "{row:?}");
        // last_seen is the backend's clock: within seconds of now.
        let seen = DateTime::parse_from_rfc3339(&row.last_seen).unwrap();
        assert!((Utc::now() - seen.with_timezone(&Utc)).num_seconds().abs() < 30);
    }
    // Per-pc targeting counts the slow agents as online too.
    let targeted = fleet
        .backend
        .target_pcs(&Target {
            all: true,
            ..Target::default()
        })
        .await
        .unwrap();
    assert_eq!(targeted.len(), 4, "{targeted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_9_deadlines_are_judged_by_the_backends_clock() {
    let fleet = fleet().await;
    let memory: Arc<dyn Transport> = Arc::new(fleet.memory.clone());
    let mut running = Vec::new();
    for (pc, skew) in [("fast", 600), ("slow", -600)] {
        running.push(run_agent(fleet.agent(pc, skew, memory.clone())));
        wait_for_agent(&fleet.backend, pc).await;
    }
    // A 5-minute starting deadline: the agent 10 minutes fast runs it
    // (it used to skip it with 125).
    let within = fleet.fire("fast", Some(300)).await;
    finished(&fleet.backend, &within).await;
    assert_eq!(fleet.outcome(&within, "fast"), (0, false));
    // A deadline that passed a minute ago: the agent 10 minutes slow skips
    // it (it used to run it).
    let past = fleet.fire("slow", Some(-60)).await;
    finished(&fleet.backend, &past).await;
    assert_eq!(fleet.outcome(&past, "slow"), (125, true));
    // And commands without a deadline run everywhere.
    for pc in ["fast", "slow"] {
        let plain = fleet.fire(pc, None).await;
        finished(&fleet.backend, &plain).await;
        assert_eq!(fleet.outcome(&plain, pc), (0, false));
    }
}

/// A command replayed after an outage: the slow agent keeps the offset it
/// measured before, so a deadline that passed while it was away is passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_9_a_replayed_command_is_judged_with_the_measured_offset() {
    let fleet = fleet().await;
    let link = FaultyTransport::new(
        Arc::new(fleet.memory.clone()),
        FaultPlan::Random(FaultRates::none(1)),
    );
    let injector = link.injector();
    let _slow = run_agent(fleet.agent("slow", -600, Arc::new(link)));
    wait_for_agent(&fleet.backend, "slow").await;
    // One live command: the agent measures its offset.
    let first = fleet.fire("slow", None).await;
    finished(&fleet.backend, &first).await;
    injector.disconnect();
    let missed = fleet.fire("slow", Some(1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    injector.reconnect();
    wait_for("the replayed command's result", || {
        let db = fleet.backend.db().clone();
        let id = missed.clone();
        async move { !db.results(&id).unwrap().is_empty() }
    })
    .await;
    assert_eq!(
        fleet.outcome(&missed, "slow"),
        (125, true),
        "its deadline passed on the backend's clock while the agent was away"
    );
}
