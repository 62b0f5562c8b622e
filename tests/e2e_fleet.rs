//! End to end: a backend and two real agents (real `sh`) in one process,
//! over the memory transport and over the file transport (the same
//! scenario on both, transports opened from their URLs).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod common;
use common::{finished, wait_for};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::{Headers, Transport};
use kanade::core::wire::{EventStarted, ExecResult};

struct Fleet {
    transport: Arc<dyn Transport>,
    backend: Backend,
    dir: tempfile::TempDir,
    backend_task: tokio::task::JoinHandle<()>,
    _agents: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_backend(
    transport: &Arc<dyn Transport>,
    dir: &std::path::Path,
) -> (Backend, tokio::task::JoinHandle<()>) {
    let mut settings = BackendSettings::new(dir.join("backend.db"));
    settings.reap_grace = Duration::ZERO;
    settings.reap_interval = Duration::from_millis(200);
    let backend = Backend::open(transport.clone(), settings).await.unwrap();
    let running = backend.clone();
    let task = tokio::spawn(async move { running.run(std::future::pending()).await.unwrap() });
    (backend, task)
}

async fn fleet() -> Fleet {
    fleet_on(|_| "memory".to_owned()).await
}

/// A fleet on the transport `url(scratch dir)` names.
async fn fleet_on(url: impl FnOnce(&std::path::Path) -> String) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let transport = kanade::transport::open(&url(dir.path())).await.unwrap();
    let (backend, backend_task) = start_backend(&transport, dir.path()).await;
    let mut agents = Vec::new();
    for pc in ["pc-a", "pc-b"] {
        let mut settings = AgentSettings::new(SubjectToken::pc(pc).unwrap(), dir.path().join(pc));
        settings.inventory = false;
        let agent = Agent::builder(settings, transport.clone()).build().unwrap();
        agents.push(tokio::spawn(async move {
            agent.run(std::future::pending()).await.unwrap()
        }));
    }
    let fleet = Fleet {
        transport,
        backend,
        dir,
        backend_task,
        _agents: agents,
    };
    wait_for("both agents online", || {
        let db = fleet.backend.db().clone();
        async move {
            db.agents(chrono::Utc::now() - chrono::Duration::seconds(90))
                .unwrap()
                .len()
                == 2
        }
    })
    .await;
    fleet
}

fn all() -> Target {
    Target {
        all: true,
        ..Target::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_across_the_fleet_into_sqlite_over_memory() {
    jobs_run_across_the_fleet_into_sqlite(fleet().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_across_the_fleet_into_sqlite_over_files() {
    let fleet = fleet_on(|dir| format!("file:{}", dir.join("bus").display())).await;
    assert!(fleet.transport.capabilities().cross_process);
    jobs_run_across_the_fleet_into_sqlite(fleet).await;
}

async fn jobs_run_across_the_fleet_into_sqlite(fleet: Fleet) {
    let backend = &fleet.backend;
    backend
        .apply_job(
            "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let exec = backend.exec("hello", &all()).await.unwrap();
    assert_eq!(exec.targeted, 2);
    let done = finished(backend, &exec.exec_id).await;
    assert_eq!(
        (done.succeeded, done.failed, done.skipped, done.started),
        (2, 0, 0, 2)
    );
    let rows = backend.db().results(&exec.exec_id).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.pc_id.as_str(), r.exit_code, r.stdout.as_str()))
            .collect::<Vec<_>>(),
        [("pc-a", 0, "hi\n"), ("pc-b", 0, "hi\n")]
    );

    // Overflow: 300,000 bytes go through result_output and come back whole.
    backend
        .apply_job(
            "id: big\nversion: 1\nexecute:\n  shell: sh\n  script: head -c 300000 /dev/zero | tr '\\0' x\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let exec_big = backend
        .exec(
            "big",
            &Target {
                pcs: vec!["pc-a".into()],
                ..Target::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(exec_big.targeted, 1);
    finished(backend, &exec_big.exec_id).await;
    let rows = backend.db().results(&exec_big.exec_id).unwrap();
    assert_eq!(
        rows[0].stdout.len(),
        300_000,
        "overflow dereferenced into the row"
    );

    // Revoked: every agent skips with 126.
    backend.revoke("hello").await.unwrap();
    let exec_revoked = backend.exec("hello", &all()).await.unwrap();
    let done = finished(backend, &exec_revoked.exec_id).await;
    assert_eq!((done.succeeded, done.skipped), (0, 2));
    assert!(backend
        .db()
        .results(&exec_revoked.exec_id)
        .unwrap()
        .iter()
        .all(|r| r.exit_code == 126 && r.skipped));

    // A result published twice changes nothing.
    let first: ExecResult = {
        let row = &backend.db().results(&exec.exec_id).unwrap()[0];
        serde_json::from_value(serde_json::json!({
            "result_id": row.result_id, "request_id": row.request_id, "exec_id": row.exec_id,
            "pc_id": row.pc_id, "exit_code": 7, "skipped": false, "stdout": "again", "stderr": "",
            "started_at": row.started_at, "finished_at": row.finished_at,
        }))
        .unwrap()
    };
    let subject = format!("results.{}", first.request_id);
    let headers = Headers::from([("Nats-Msg-Id".to_owned(), "a-new-id".to_owned())]);
    fleet
        .transport
        .messages()
        .publish(
            &subject,
            headers,
            Bytes::from(serde_json::to_vec(&first).unwrap()),
        )
        .await
        .unwrap();

    // And a projector restart mid-stream neither loses nor duplicates rows.
    fleet.backend_task.abort();
    let (restarted, _task) = start_backend(&fleet.transport, fleet.dir.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = restarted.db().results(&exec.exec_id).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.exit_code == 0 && r.stdout == "hi\n"),
        "{rows:?}"
    );
    let again = restarted.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!((again.succeeded, again.failed), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_run_is_reaped_and_a_late_result_replaces_it() {
    let fleet = fleet().await;
    let backend = &fleet.backend;
    backend
        .apply_job(
            "id: ghostly\nversion: 1\nexecute:\n  shell: sh\n  script: \"true\"\n  timeout: 1s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    // Addressed to a pc that does not exist: nobody reports.
    let exec = backend
        .exec(
            "ghostly",
            &Target {
                pcs: vec!["ghost".into()],
                ..Target::default()
            },
        )
        .await
        .unwrap();
    let started = EventStarted {
        result_id: "late-ghost".into(),
        request_id: exec.request_id.clone(),
        exec_id: Some(exec.exec_id.clone()),
        pc_id: "ghost".into(),
        started_at: chrono::Utc::now(),
        manifest_id: Some("ghostly".into()),
        version: Some("1".into()),
    };
    let log = fleet.transport.messages();
    log.publish(
        &format!("events.started.{}.ghost", exec.exec_id),
        Headers::new(),
        Bytes::from(serde_json::to_vec(&started).unwrap()),
    )
    .await
    .unwrap();
    wait_for("the reaper's result", || {
        let rows = backend.db().results(&exec.exec_id).unwrap();
        async move { rows.len() == 1 && rows[0].reaped }
    })
    .await;
    let reaped = &backend.db().results(&exec.exec_id).unwrap()[0];
    assert_eq!(reaped.exit_code, -1);
    assert_eq!(
        backend
            .db()
            .execution(&exec.exec_id)
            .unwrap()
            .unwrap()
            .failed,
        1
    );
    let late = serde_json::json!({
        "result_id": "late-ghost", "request_id": exec.request_id, "exec_id": exec.exec_id, "pc_id": "ghost",
        "exit_code": 0, "skipped": false, "stdout": "made it", "stderr": "",
        "started_at": chrono::Utc::now(), "finished_at": chrono::Utc::now(),
    });
    log.publish(
        &format!("results.{}", exec.request_id),
        Headers::new(),
        Bytes::from(late.to_string()),
    )
    .await
    .unwrap();
    wait_for("the late result replacing the reaped one", || {
        let rows = backend.db().results(&exec.exec_id).unwrap();
        async move { rows.len() == 1 && !rows[0].reaped }
    })
    .await;
    let row = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(
        (row.succeeded, row.failed),
        (1, 0),
        "the late result replaced the reaped one without double counting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_holds_and_approval_jobs_wait_for_their_approvers() {
    let fleet = fleet().await;
    let backend = &fleet.backend;
    for version in ["1.0.0", "2.0.0"] {
        backend
            .apply_job(&format!("id: pinned\nversion: {version}\nexecute:\n  shell: sh\n  script: echo {version}\n  timeout: 30s\n"), &Default::default())
            .await
            .unwrap();
    }
    backend.pin("pinned", "1.0.0").await.unwrap();
    // exec of 2.0.0 says the pin holds; a schedule's fire goes out and is
    // skipped everywhere.
    let refused = backend.exec("pinned", &all()).await.unwrap_err();
    assert!(refused.to_string().contains("pinned to 1.0.0"), "{refused}");
    let exec = backend
        .fire("pinned", &all(), Default::default())
        .await
        .unwrap();
    let done = finished(backend, &exec.exec_id).await;
    assert_eq!(
        (done.succeeded, done.skipped),
        (0, 2),
        "exec must not undo an operator's pin"
    );
    assert!(backend
        .db()
        .results(&exec.exec_id)
        .unwrap()
        .iter()
        .all(|r| r.exit_code == 124));

    backend
        .apply_job(
            "id: careful\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: true\n",
            &Default::default(),
        )
        .await
        .unwrap();
    // Exec records the request and publishes nothing until approved.
    let mut results = fleet
        .transport
        .messages()
        .subscribe("results.>")
        .await
        .unwrap();
    let waiting = backend.exec("careful", &all()).await.unwrap();
    assert_eq!(waiting.status, "awaiting_approval");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), results.next())
            .await
            .is_err(),
        "nothing runs before the approval"
    );
    // The scheduler's path never fires it without a person.
    let err = backend
        .fire("careful", &all(), Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires approval"), "{err}");
    let approver = kanade::backend::auth::Principal {
        name: "alice".into(),
        role: kanade::backend::auth::Role::Operator,
        scopes: Default::default(),
        kind: kanade::backend::auth::CredentialKind::Token,
    };
    let approved = backend
        .approve(&waiting.exec_id, &approver, None)
        .await
        .unwrap();
    assert_eq!(approved.status, "pending");
    let done = finished(backend, &waiting.exec_id).await;
    assert_eq!((done.succeeded, done.failed), (2, 0));
}

/// Case 3 of the reliability issue: output whose JSON is far larger than
/// its bytes (control characters) overflows by its encoded size and
/// reaches the backend whole; nothing is parked for its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_3_a_result_is_sized_by_its_encoding() {
    let fleet = fleet().await;
    let backend = &fleet.backend;
    for (id, script, byte) in [
        (
            "escapes",
            "head -c 200000 /dev/zero | tr '\\\\0' '\\\\033'",
            0x1bu8,
        ),
        (
            "quotes",
            "head -c 200000 /dev/zero | tr '\\\\0' '\\\"'",
            b'"',
        ),
    ] {
        backend
            .apply_job(
                &format!("id: {id}\nversion: 1\nexecute:\n  shell: sh\n  script: \"{script}\"\n  timeout: 30s\n"),
                &Default::default(),
            )
            .await
            .unwrap();
        let exec = backend.exec(id, &all()).await.unwrap();
        let done = finished(backend, &exec.exec_id).await;
        assert_eq!(done.succeeded, 2, "{id}: {done:?}");
        for row in backend.db().results(&exec.exec_id).unwrap() {
            assert_eq!(row.stdout.len(), 200_000, "{id}: the whole output arrived");
            assert!(row.stdout.bytes().all(|b| b == byte), "{id}");
        }
    }
    for pc in ["pc-a", "pc-b"] {
        let stuck = fleet.dir.path().join(pc).join("outbox").join("stuck");
        let parked = std::fs::read_dir(&stuck).map(|d| d.count()).unwrap_or(0);
        assert_eq!(parked, 0, "{pc}: nothing parked for its size");
    }
}
