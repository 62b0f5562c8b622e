//! What the rollout tests share: a fleet of real agents on the memory
//! bus with a running backend, the job that fails on chosen pcs, and
//! helpers to exec through a rollout and wait on its state.

#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;

use kanade::agent::{Agent, AgentSettings};
use kanade::backend::db::ResultRow;
use kanade::backend::manifest::Target;
use kanade::backend::rollout::spec::RolloutSpec;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::Transport;

use crate::common::{self, run_agent, wait_for, RunningAgent};

/// The pcs whose run of version 1 fails.
pub const FAILING: [&str; 4] = ["pc-03", "pc-05", "pc-08", "pc-10"];

pub fn job(version: u32, failing: bool) -> String {
    let script = if failing {
        format!(
            "sleep 0.3; case \"$KANADE_PC_ID\" in {}) echo broken >&2; exit 1;; esac; echo ok",
            FAILING.join("|")
        )
    } else {
        "sleep 0.3; echo fixed".to_owned()
    };
    format!("id: patch\nversion: {version}\nexecute:\n  shell: sh\n  script: '{script}'\n  timeout: 30s\n")
}

pub struct Fleet {
    pub backend: Backend,
    pub transport: Arc<dyn Transport>,
    _agents: Vec<RunningAgent>,
    _dir: tempfile::TempDir,
}

pub async fn fleet(n: usize, canaries: &[&str]) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    let backend = common::running_backend_with_hello(
        transport.clone(),
        BackendSettings::new(dir.path().join("backend.db")),
    )
    .await;
    let mut agents = Vec::new();
    for i in 1..=n {
        let pc = format!("pc-{i:02}");
        let mut settings =
            AgentSettings::new(SubjectToken::pc(pc.clone()).unwrap(), dir.path().join(&pc));
        settings.inventory = false;
        if canaries.contains(&pc.as_str()) {
            settings.groups = vec![SubjectToken::group("canary").unwrap()];
        }
        agents.push(run_agent(
            Agent::builder(settings, transport.clone()).build().unwrap(),
        ));
    }
    for i in 1..=n {
        common::wait_for_agent(&backend, &format!("pc-{i:02}")).await;
    }
    Fleet {
        backend,
        transport,
        _agents: agents,
        _dir: dir,
    }
}

pub fn spec(json: &str) -> RolloutSpec {
    serde_json::from_str(json).unwrap()
}

/// Runs `job` on `target` through the rollout `json`, as a test operator.
pub async fn rollout_exec(
    backend: &Backend,
    job: &str,
    target: &Target,
    json: &str,
) -> Result<kanade::backend::db::ExecutionRow, kanade::backend::BackendError> {
    backend
        .exec_with(
            job,
            target,
            Some(&spec(json)),
            &kanade::backend::auth::Principal::local("test"),
        )
        .await
}

pub fn all() -> Target {
    Target {
        all: true,
        ..Target::default()
    }
}

/// The most runs that overlapped in time, from the results' start and
/// finish times.
pub fn most_overlapping(rows: &[ResultRow]) -> usize {
    let mut edges: Vec<(String, i32)> = Vec::new();
    for row in rows.iter().filter(|r| !r.skipped) {
        edges.push((row.started_at.clone(), 1));
        edges.push((row.finished_at.clone(), -1));
    }
    // Ends before starts at the same instant.
    edges.sort_by(|a, b| {
        let a_t = chrono::DateTime::parse_from_rfc3339(&a.0).unwrap();
        let b_t = chrono::DateTime::parse_from_rfc3339(&b.0).unwrap();
        a_t.cmp(&b_t).then(a.1.cmp(&b.1))
    });
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

pub async fn rollout_state(backend: &Backend, exec_id: &str, state: &str) {
    wait_for(&format!("the rollout is {state}"), || {
        let backend = backend.clone();
        let id = exec_id.to_owned();
        let state = state.to_owned();
        async move { backend.rollout_status(&id).await.unwrap().rollout.state == state }
    })
    .await;
}
