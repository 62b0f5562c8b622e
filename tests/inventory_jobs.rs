//! The example jobs in `examples/jobs/` run by real agents on this machine
//! (processes, `sh`): the package inventory fills a table with one row per
//! package per pc and records a removal in its history; the disk-usage and
//! patched checks give every pc a state.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{finished, run_agent, wait_for_agent};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::Transport;

const PCS: [&str; 2] = ["pc-1", "pc-2"];

struct Fleet {
    backend: Backend,
    _agents: Vec<common::RunningAgent>,
    _dir: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    let settings = BackendSettings::new(dir.path().join("backend.db"));
    let backend = common::running_backend_with_hello(transport.clone(), settings).await;
    let mut agents = Vec::new();
    for pc in PCS {
        let mut settings = AgentSettings::new(SubjectToken::pc(pc).unwrap(), dir.path().join(pc));
        settings.inventory = false;
        agents.push(run_agent(
            Agent::builder(settings, transport.clone()).build().unwrap(),
        ));
        wait_for_agent(&backend, pc).await;
    }
    Fleet {
        backend,
        _agents: agents,
        _dir: dir,
    }
}

impl Fleet {
    async fn run(&self, yaml: &str) -> String {
        let job = self
            .backend
            .apply_job(yaml, &BTreeMap::new())
            .await
            .unwrap();
        let exec = self
            .backend
            .exec(
                &job.id,
                &Target {
                    all: true,
                    ..Target::default()
                },
            )
            .await
            .unwrap();
        let row = finished(&self.backend, &exec.exec_id).await;
        assert_eq!(row.succeeded, 2, "{row:?}");
        job.id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_inventory_fills_its_table_and_records_a_removal() {
    let fleet = fleet().await;
    let yaml = common::example_job("packages.yaml");
    let job = fleet.run(&yaml).await;
    let db = fleet.backend.db().clone();
    let rows = db
        .inventory_rows(&job, Some("packages"), None, None)
        .unwrap();
    let per_pc = |pc: &str| rows.iter().filter(|r| r.pc_id == pc).count();
    assert!(per_pc("pc-1") > 10, "{} packages", per_pc("pc-1"));
    assert_eq!(
        per_pc("pc-1"),
        per_pc("pc-2"),
        "the same machine, the same packages"
    );
    let facts = db.inventory_facts(&job, None, None).unwrap();
    assert_eq!(facts.len(), 2);
    assert!(facts[0].facts["kernel"].is_string(), "{:?}", facts[0].facts);
    assert!(db.projection_skips(Some(&job), 10).unwrap().is_empty());

    // A variant that no longer lists one package: its removal is history.
    let gone = rows[0].row["name"].as_str().unwrap().to_owned();
    let variant = yaml.replace("version: \"1\"", "version: \"2\"").replace(
        "list | LC_ALL=C sort -u",
        &format!("list | awk -F'\\t' '$1 != \"{gone}\"' | LC_ALL=C sort -u"),
    );
    assert_ne!(variant, yaml);
    fleet.run(&variant).await;
    let removed: Vec<_> = db
        .inventory_history(&job, None, None)
        .unwrap()
        .into_iter()
        .filter(|c| c.change == "removed")
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    for change in &removed {
        assert_eq!(change.before.as_ref().unwrap()["name"], gone.as_str());
    }
    let now = db
        .inventory_rows(&job, Some("packages"), Some("pc-1"), None)
        .unwrap();
    assert_eq!(now.len(), per_pc("pc-1") - 1);
    assert!(db
        .inventory_rows(&job, Some("packages"), None, Some(("name", &gone)))
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_checks_give_every_pc_a_state() {
    let fleet = fleet().await;
    let db = fleet.backend.db().clone();
    for (file, check, allowed) in [
        (
            "disk-usage.yaml",
            "disk_usage",
            &["pass", "warn", "fail"][..],
        ),
        ("patched.yaml", "patched", &["pass", "warn", "unknown"][..]),
    ] {
        fleet.run(&common::example_job(file)).await;
        let states = db.check_states(check, false).unwrap();
        assert_eq!(states.len(), 2, "{check}: {states:?}");
        for state in &states {
            assert!(
                allowed.contains(&state.status.as_str()),
                "{check}: {state:?}"
            );
            assert!(!state.detail.is_empty());
        }
        let summary = db.check_summary(Some(check)).unwrap();
        assert_eq!(summary[0].never_ran, 0, "{summary:?}");
        // Another job may not report under the same check name.
        let squatter = format!(
            "id: other-{check}\nversion: \"1\"\nexecute: {{shell: sh, script: 'true', timeout: 1m}}\ncheck: {{name: {check}}}\n"
        );
        let refused = fleet
            .backend
            .apply_job(&squatter, &BTreeMap::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("belongs to job"), "{refused}");
        let counted = summary[0].pass + summary[0].warn + summary[0].fail + summary[0].unknown;
        assert_eq!(counted, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_list_carries_the_latest_hardware_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    let settings = BackendSettings::new(dir.path().join("backend.db"));
    let backend = common::running_backend_with_hello(transport.clone(), settings).await;
    // Inventory on (the default): the agent reports its hardware at start.
    let settings = AgentSettings::new(SubjectToken::pc("pc-hw").unwrap(), dir.path().join("pc-hw"));
    let _agent = run_agent(Agent::builder(settings, transport.clone()).build().unwrap());
    common::wait_for("pc-hw's hardware in the agents list", || {
        let db = backend.db().clone();
        async move {
            db.agents(chrono::Utc::now() - chrono::Duration::seconds(90))
                .unwrap()
                .iter()
                .any(|a| a.pc_id == "pc-hw" && a.hardware.is_some())
        }
    })
    .await;
    let agents = backend
        .db()
        .agents(chrono::Utc::now() - chrono::Duration::seconds(90))
        .unwrap();
    let hardware = agents[0].hardware.as_ref().unwrap();
    assert_eq!(hardware.pc_id, "pc-hw");
    assert!(hardware.cpu_cores.unwrap_or(0) >= 1, "{hardware:?}");
    assert!(hardware.memory_bytes.unwrap_or(0) > 0, "{hardware:?}");
}

/// Found starting a backend and agents together: an agent's first
/// hardware report went out before the backend had created the INVENTORY
/// stream, nothing stored it, and the next came a day later. A report no
/// stream stored is sent again (after 30 s, backing off).
#[tokio::test(start_paused = true)]
async fn a_hardware_report_sent_before_the_broker_was_provisioned_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    let settings = AgentSettings::new(
        SubjectToken::pc("pc-early").unwrap(),
        dir.path().join("pc-early"),
    );
    let _agent = run_agent(Agent::builder(settings, transport.clone()).build().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.inline_database = true;
    let backend = Backend::open(transport, settings).await.unwrap();
    let running = backend.clone();
    tokio::spawn(async move { running.run(std::future::pending()).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(120)).await;
    let agents = backend
        .db()
        .agents(chrono::Utc::now() - chrono::Duration::days(1))
        .unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert!(agents[0].hardware.is_some(), "{agents:?}");
}
