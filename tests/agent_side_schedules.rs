//! `runs_on: agent` schedules end to end on one bus: the backend hands the
//! schedule, signed, to agents through the `agent_schedules` bucket;
//! enforcing agents in scope fire it on their own and report like any
//! command; the backend groups the results into executions of that
//! schedule, with counters. A pc outside the target fires nothing, and a
//! disabled schedule stops.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use kanade::agent::trust::SignatureMode;
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::BackendSettings;
use kanade::core::names::{SubjectToken, BUCKET_AGENT_SCHEDULES};
use kanade::core::policy::signature::{CommandSigner, KeyRing};
use kanade::core::policy::signed::SignedDocument;
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::{KvConfig, Transport};
use kanade::core::wire::AgentSchedule;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_side_schedule_fires_on_its_agents_and_groups_by_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let key = Arc::new(CommandSigner::from_seed("k1", [4; 32]));
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.signer = Some(key.clone());
    let backend = common::running_backend_with_hello(transport.clone(), settings).await;
    backend
        .apply_schedule(
            "id: on-agents\njob_id: hello\nruns_on: agent\nwhen:\n  per_pc: once\ntarget:\n  groups: [lab]\n",
        )
        .await
        .unwrap();
    // Backend-side schedules are not handed out.
    backend
        .apply_schedule(
            "id: on-backend\njob_id: hello\nwhen:\n  per_pc: once\ntarget:\n  pcs: [nobody]\n",
        )
        .await
        .unwrap();
    let bucket = transport
        .key_value(KvConfig::new(BUCKET_AGENT_SCHEDULES))
        .await
        .unwrap();
    assert_eq!(bucket.keys().await.unwrap(), ["on-agents"]);
    let doc: SignedDocument =
        serde_json::from_slice(&bucket.get("on-agents").await.unwrap().unwrap().value).unwrap();
    let ring = KeyRing::from_entries(vec![key.ring_entry(None, None)]).unwrap();
    assert_eq!(doc.verify(&ring).unwrap(), "k1");
    let record: AgentSchedule = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(
        (record.command.id.as_str(), record.command.version.as_str()),
        ("hello", "1")
    );

    let mut agents = Vec::new();
    for (pc, group) in [("pc-a", "lab"), ("pc-b", "lab"), ("pc-c", "office")] {
        let mut settings = AgentSettings::new(SubjectToken::pc(pc).unwrap(), dir.path().join(pc));
        settings.groups = vec![SubjectToken::group(group).unwrap()];
        settings.inventory = false;
        settings.trust.ring = Some(ring.clone());
        settings.trust.mode = SignatureMode::Enforce;
        agents.push(common::run_agent(
            Agent::builder(settings, transport.clone()).build().unwrap(),
        ));
    }
    let mine = |backend: &kanade::backend::Backend| {
        backend
            .db()
            .executions()
            .unwrap()
            .into_iter()
            .filter(|e| e.schedule_id.as_deref() == Some("on-agents"))
            .collect::<Vec<_>>()
    };
    common::wait_for("both lab agents' results", || {
        let rows = mine(&backend);
        async move {
            rows.iter().map(|e| e.succeeded).sum::<i64>() == 2
                && rows.iter().all(|e| e.status == "completed")
        }
    })
    .await;
    let executions = mine(&backend);
    for execution in &executions {
        assert!(execution.exec_id.starts_with("sched-on-agents-"));
        assert_eq!(execution.job_id, "hello");
        assert_eq!(execution.targeted, execution.succeeded, "{execution:?}");
        for result in backend.db().results(&execution.exec_id).unwrap() {
            assert_eq!((result.exit_code, result.stdout.as_str()), (0, "hello\n"));
            assert_ne!(result.pc_id, "pc-c", "pc-c is not in the target");
        }
    }
    // Once per pc: nothing more, also after the schedule is disabled.
    backend
        .set_schedule_enabled("on-agents", false)
        .await
        .unwrap();
    let doc: SignedDocument =
        serde_json::from_slice(&bucket.get("on-agents").await.unwrap().unwrap().value).unwrap();
    assert!(
        !serde_json::from_str::<AgentSchedule>(&doc.body)
            .unwrap()
            .enabled
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mine(&backend).iter().map(|e| e.succeeded).sum::<i64>(),
        2,
        "each lab pc ran it once"
    );
    for (stop, task) in agents {
        let _ = stop.send(());
        task.await.unwrap();
    }
}
