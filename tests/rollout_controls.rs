//! Rollout controls and halts with real agents on the memory bus: halt
//! actions (revoke, kill) and their audit entry, resume back to an earlier
//! wave, and kills that abort a rollout.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;
mod rollout_common;

use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::core::names::SubjectToken;
use std::time::Duration;

use common::{run_agent, wait_for};
use rollout_common::{all, fleet, job, rollout_exec, rollout_state};

/// `on_halt: [revoke, kill]`: the halt revokes the job (a later exec of
/// it is skipped with 126) and kills the copies still running (exit -1);
/// the halt is in the audit trail with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_revokes_and_kills_when_asked() {
    let fleet = fleet(4, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(
            "id: patch\nversion: 1\nexecute:\n  shell: sh\n  script: 'if [ \"$KANADE_PC_ID\" = pc-01 ]; then exit 1; fi; sleep 30'\n  timeout: 60s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let exec = rollout_exec(
        backend,
        "patch",
        &all(),
        r#"{"batch": 4, "max_errors": 0, "on_halt": ["revoke", "kill"]}"#,
    )
    .await
    .unwrap();
    rollout_state(backend, &exec.exec_id, "halted").await;
    wait_for("the running copies are killed", || {
        let db = backend.db().clone();
        let id = exec.exec_id.clone();
        async move { db.results(&id).unwrap().len() == 4 }
    })
    .await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    let killed = rows.iter().filter(|r| r.exit_code == -1).count();
    assert_eq!(killed, 3, "{rows:?}");
    let execution = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(execution.status, "halted", "a kill keeps the halt's status");
    let audit = backend.db().audit_all().unwrap();
    let halt = audit
        .iter()
        .find(|e| e.action == "rollout.halt")
        .expect("the halt is audited");
    assert_eq!(halt.target.as_deref(), Some(exec.exec_id.as_str()));
    assert_eq!(halt.details["reason"], "1 errors of 1 results > 0");
    assert_eq!(
        halt.details["on_halt"],
        serde_json::json!(["revoke", "kill"])
    );
    // Revoked: a plain exec of the job is skipped by every agent.
    let again = backend.exec("patch", &all()).await.unwrap();
    let done = common::finished(backend, &again.exec_id).await;
    assert_eq!((done.skipped, done.targeted), (4, 4), "{done:?}");
    // Resuming lifts the revoke its halt made.
    backend.resume_rollout(&exec.exec_id).await.unwrap();
    rollout_state(backend, &exec.exec_id, "completed").await;
    backend
        .apply_job(
            "id: patch\nversion: 2\nexecute:\n  shell: sh\n  script: echo fixed\n  timeout: 60s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let after = backend.exec("patch", &all()).await.unwrap();
    let done = common::finished(backend, &after.exec_id).await;
    assert_eq!((done.succeeded, done.targeted), (4, 4), "{done:?}");
}

/// Resume goes back to the earliest wave with targets left: a target of
/// the first wave that was offline at its turn (unreached) runs once it is
/// back, after a later wave halted and the job was fixed. A kill of a
/// halted rollout aborts it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reaches_an_earlier_waves_unreached_target() {
    let fleet = fleet(3, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, true), &Default::default())
        .await
        .unwrap();
    // Waves in pc order: pc-00 (never seen yet) and pc-01 first, then
    // pc-02 and pc-03 (which fails: halt).
    let targets = Target {
        pcs: vec![
            "pc-00".into(),
            "pc-01".into(),
            "pc-02".into(),
            "pc-03".into(),
        ],
        ..Target::default()
    };
    let exec = rollout_exec(
        backend,
        "patch",
        &targets,
        r#"{"batch": 2, "waves": [{"percent": 50}, {"percent": 100}], "max_errors": 0}"#,
    )
    .await
    .unwrap();
    rollout_state(backend, &exec.exec_id, "halted").await;
    let status = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(status.waves[0].counts.unreached, 1, "{status:?}");
    // pc-00 comes online; the job is fixed; resume.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = AgentSettings::new(SubjectToken::pc("pc-00").unwrap(), dir.path());
    settings.inventory = false;
    let _late = run_agent(
        Agent::builder(settings, fleet.transport.clone())
            .build()
            .unwrap(),
    );
    common::wait_for_agent(backend, "pc-00").await;
    backend
        .apply_job(&job(2, false), &Default::default())
        .await
        .unwrap();
    backend.resume_rollout(&exec.exec_id).await.unwrap();
    rollout_state(backend, &exec.exec_id, "completed").await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    let pc00: Vec<_> = rows.iter().filter(|r| r.pc_id == "pc-00").collect();
    assert_eq!(pc00.len(), 1, "{rows:?}");
    assert_eq!(pc00[0].stdout, "fixed\n");
}

/// A kill of a halted rollout aborts it: it cannot be resumed after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_of_a_halted_rollout_aborts_it() {
    let fleet = fleet(4, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, true), &Default::default())
        .await
        .unwrap();
    let exec = rollout_exec(backend, "patch", &all(), r#"{"batch": 4, "max_errors": 0}"#)
        .await
        .unwrap();
    rollout_state(backend, &exec.exec_id, "halted").await;
    backend.kill(&exec.exec_id).await.unwrap();
    let status = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(status.rollout.state, "aborted");
    let refused = backend.resume_rollout(&exec.exec_id).await.unwrap_err();
    assert!(refused.to_string().contains("is aborted"), "{refused}");
}

/// A kill of an execution whose rollout is still running aborts the
/// rollout: the copies running stop and nothing more is dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_aborts_the_rollout() {
    let fleet = fleet(4, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(
            "id: patch\nversion: 1\nexecute:\n  shell: sh\n  script: sleep 30\n  timeout: 60s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let exec = rollout_exec(backend, "patch", &all(), r#"{"batch": 1}"#)
        .await
        .unwrap();
    wait_for("the first run starts", || {
        let db = backend.db().clone();
        let id = exec.exec_id.clone();
        async move { db.execution(&id).unwrap().unwrap().started == 1 }
    })
    .await;
    backend.kill(&exec.exec_id).await.unwrap();
    let status = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(status.rollout.state, "aborted");
    wait_for("the killed run reports", || {
        let db = backend.db().clone();
        let id = exec.exec_id.clone();
        async move { db.results(&id).unwrap().len() == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(status.waves[0].counts.pending, 3, "{status:?}");
    assert_eq!(backend.db().results(&exec.exec_id).unwrap().len(), 1);
    let execution = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(execution.status, "cancelled");
}
