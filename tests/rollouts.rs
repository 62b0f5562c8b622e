//! Rollouts that stop themselves (DESIGN §11), on the in-memory bus with
//! real agents running real `sh` scripts: a budget breach halts the
//! rollout on the result that breached it and nothing is dispatched
//! after; the window is never overfilled; resume with a fixed version
//! finishes the targets not yet done; a canary wave goes first and the
//! next waits for its bake; pause holds dispatch.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

mod common;
mod rollout_common;
use common::{run_agent, wait_for};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::Transport;
use rollout_common::{all, fleet, job, most_overlapping, rollout_exec, rollout_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_halts_dispatch_and_resume_with_a_fix_finishes_the_rest() {
    let fleet = fleet(12, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, true), &Default::default())
        .await
        .unwrap();
    let exec = rollout_exec(backend, "patch", &all(), r#"{"batch": 3, "max_errors": 1}"#)
        .await
        .unwrap();
    assert_eq!(exec.targeted, 12);
    rollout_state(backend, &exec.exec_id, "halted").await;
    let halted = backend.rollout_status(&exec.exec_id).await.unwrap();
    let reason = halted.rollout.reason.clone().unwrap();
    assert!(
        reason.starts_with("2 errors of ") && reason.ends_with(" results > 1"),
        "{reason}"
    );
    // In-flight runs finish; nothing more is dispatched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = backend.rollout_status(&exec.exec_id).await.unwrap();
    let counts = &after.waves[0].counts;
    assert_eq!(counts.in_flight, 0);
    let ran = counts.succeeded + counts.failed + counts.skipped;
    assert_eq!(ran + counts.pending, 12, "{counts:?}");
    assert!(
        counts.pending >= 3,
        "pc-10 and later never went out: {counts:?}"
    );
    let rows = backend.db().results(&exec.exec_id).unwrap();
    let ran_pcs: BTreeSet<_> = rows.iter().map(|r| r.pc_id.as_str()).collect();
    // The second failure halted it; a run in flight then may fail too.
    assert!(!ran_pcs.contains("pc-10"), "{ran_pcs:?}");
    let failures = rows.iter().filter(|r| r.exit_code != 0).count();
    assert!((2..=3).contains(&failures), "{rows:?}");
    assert!(most_overlapping(&rows) <= 3, "window of 3 overfilled");
    let execution = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(execution.status, "halted");
    // Still halted a while later: a halted rollout never dispatches again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        backend.db().results(&exec.exec_id).unwrap().len(),
        rows.len()
    );
    // The fix, then resume: the pcs not yet done run version 2.
    backend
        .apply_job(&job(2, false), &Default::default())
        .await
        .unwrap();
    let resumed = backend.resume_rollout(&exec.exec_id).await.unwrap();
    assert_eq!(resumed.rollout.state, "running");
    rollout_state(backend, &exec.exec_id, "completed").await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    let pcs: BTreeSet<_> = rows.iter().map(|r| r.pc_id.as_str()).collect();
    assert_eq!((rows.len(), pcs.len()), (12, 12), "each pc once");
    assert_eq!(rows.iter().filter(|r| r.exit_code != 0).count(), failures);
    assert!(rows
        .iter()
        .filter(|r| !ran_pcs.contains(r.pc_id.as_str()))
        .all(|r| r.stdout == "fixed\n"));
    assert!(most_overlapping(&rows) <= 3);
    let execution = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(
        (execution.status.as_str(), execution.version.as_str()),
        ("completed", "2")
    );
    // Controls say what state allows them.
    let again = backend.resume_rollout(&exec.exec_id).await.unwrap_err();
    assert!(again.to_string().contains("is completed"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_wave_bakes_before_the_rest_and_pause_holds_dispatch() {
    let fleet = fleet(6, &["pc-04"]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, false), &Default::default())
        .await
        .unwrap();
    let exec = rollout_exec(backend, "patch", &all(), r#"{"batch": 2, "waves": [{"group": "canary", "bake": "3s"}, {"percent": 100}], "max_errors": "10%"}"#)
        .await
        .unwrap();
    wait_for("the canary answers", || {
        let db = backend.db().clone();
        let id = exec.exec_id.clone();
        async move { db.results(&id).unwrap().len() == 1 }
    })
    .await;
    assert_eq!(
        backend.db().results(&exec.exec_id).unwrap()[0].pc_id,
        "pc-04"
    );
    // Baking: nothing else for about 3 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let baking = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(baking.waves[1].counts.pending, 5, "{baking:?}");
    assert!(baking.rollout.wave_finished_at.is_some());
    // Pause during the bake: still nothing once the bake is over.
    backend.pause_rollout(&exec.exec_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = backend.rollout_status(&exec.exec_id).await.unwrap();
    assert_eq!(paused.rollout.state, "paused");
    assert_eq!(paused.waves[1].counts.pending, 5);
    backend.resume_rollout(&exec.exec_id).await.unwrap();
    rollout_state(backend, &exec.exec_id, "completed").await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    assert_eq!(rows.len(), 6);
    assert!(most_overlapping(&rows) <= 2);
    // Abort of a finished rollout is refused with its state.
    let refused = backend
        .abort_rollout(&exec.exec_id, "test")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("is completed"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_target_does_not_hold_the_window() {
    let fleet = fleet(3, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, false), &Default::default())
        .await
        .unwrap();
    // pc-99 is named but has never been seen: at its turn it is offline,
    // so it is passed over and, once nothing else is left, unreached.
    let exec = rollout_exec(
        backend,
        "patch",
        &Target {
            pcs: vec![
                "pc-01".into(),
                "pc-02".into(),
                "pc-03".into(),
                "pc-99".into(),
            ],
            ..Target::default()
        },
        r#"{"batch": 1}"#,
    )
    .await
    .unwrap();
    rollout_state(backend, &exec.exec_id, "completed").await;
    let status = backend.rollout_status(&exec.exec_id).await.unwrap();
    let counts = &status.waves[0].counts;
    assert_eq!((counts.succeeded, counts.unreached), (3, 1), "{counts:?}");
    assert_eq!(backend.db().results(&exec.exec_id).unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_are_refused_with_the_field() {
    let fleet = fleet(1, &[]).await;
    let backend = &fleet.backend;
    for (json, expected) in [
        (r#"{"batch": 0}"#, "rollout.batch: is 0"),
        (r#"{"batch": "120%"}"#, "rollout.batch: 120% is not a share"),
        (
            r#"{"waves": [{"group": "canary"}]}"#,
            "rollout.waves: do not cover the target",
        ),
        (
            r#"{"strategy": "wave", "waves": [{"group": "canary"}]}"#,
            "which schedules have",
        ),
    ] {
        let err = rollout_exec(backend, "hello", &all(), json)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{json}: {err}");
    }
    assert!(
        backend.db().executions().unwrap().is_empty(),
        "nothing recorded"
    );
}

#[test]
fn a_schedules_rollout_is_checked_with_field_and_line() {
    let err = kanade::backend::manifest::parse_schedule(
        "id: s\njob_id: patch\nwhen:\n  per_target: once\ntarget:\n  all: true\nrollout:\n  batch: 0\n  max_errors: 150%\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 8: rollout.batch: is 0"), "{text}");
    assert!(text.contains("line 9: rollout.max_errors"), "{text}");
    // The reference's timed waves still parse.
    kanade::backend::manifest::parse_schedule(
        "id: s\njob_id: patch\nwhen:\n  per_target: once\ntarget:\n  groups: [canary, rest]\nrollout:\n  strategy: wave\n  waves:\n    - group: canary\n    - group: rest\n      delay: 1h\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_through_its_rollout() {
    let fleet = fleet(5, &[]).await;
    let backend = &fleet.backend;
    backend
        .apply_job(&job(1, false), &Default::default())
        .await
        .unwrap();
    backend
        .apply_schedule(
            "id: nightly-patch\njob_id: patch\nwhen:\n  per_target: {every: 1h}\ntarget:\n  all: true\nrollout:\n  batch: 2\n  max_errors: 0\n",
        )
        .await
        .unwrap();
    let scheduler = kanade::backend::scheduler::Scheduler::with_clock(
        backend.clone(),
        Arc::new(chrono::Utc::now),
        Duration::from_millis(200),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));
    wait_for("the schedule fires", || {
        let db = backend.db().clone();
        async move { !db.executions().unwrap().is_empty() }
    })
    .await;
    let _ = stop.send(());
    running.await.unwrap();
    let exec = backend.db().executions().unwrap().remove(0);
    assert_eq!(exec.schedule_id.as_deref(), Some("nightly-patch"));
    rollout_state(backend, &exec.exec_id, "completed").await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(most_overlapping(&rows) <= 2, "batch 2 overfilled");
}

/// A backend started on `db`, and the sender that stops it (its
/// projectors, driver and reaper are aborted, as in a crash of the task).
async fn stoppable_backend(
    transport: &Arc<dyn Transport>,
    db: &std::path::Path,
) -> (Backend, tokio::sync::oneshot::Sender<()>) {
    let mut settings = BackendSettings::new(db.to_path_buf());
    settings.reap_grace = Duration::from_secs(600);
    let backend = Backend::open(transport.clone(), settings).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = backend.clone();
    tokio::spawn(async move {
        running
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (backend, stop)
}

/// A backend stopped mid-rollout and started again on the same database:
/// no target is dispatched twice, none is forgotten, and results that
/// arrived while it was down are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_restart_mid_rollout_neither_redispatches_nor_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backend.db");
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    common::heartbeat_every_second(&transport).await;
    let (first, stop_first) = stoppable_backend(&transport, &db).await;
    let log = dir.path().join("runs.log");
    first
        .apply_job(
            &format!(
                "id: slow\nversion: 1\nexecute:\n  shell: sh\n  script: 'echo \"$KANADE_PC_ID\" >> {}; sleep 1'\n  timeout: 30s\n",
                log.display()
            ),
            &Default::default(),
        )
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 1..=8 {
        let pc = format!("pc-{i:02}");
        let mut agent_settings =
            AgentSettings::new(SubjectToken::pc(pc.clone()).unwrap(), dir.path().join(&pc));
        agent_settings.inventory = false;
        agents.push(run_agent(
            Agent::builder(agent_settings, transport.clone())
                .build()
                .unwrap(),
        ));
    }
    for i in 1..=8 {
        common::wait_for_agent(&first, &format!("pc-{i:02}")).await;
    }
    let exec = rollout_exec(&first, "slow", &all(), r#"{"batch": 2}"#)
        .await
        .unwrap();
    wait_for("two runs in flight", || {
        let backend = first.clone();
        let id = exec.exec_id.clone();
        async move {
            let status = backend.rollout_status(&id).await.unwrap();
            status.waves[0].counts.in_flight == 2
        }
    })
    .await;
    let _ = stop_first.send(());
    drop(first);
    // Down while the two in-flight runs finish and publish their results.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs_while_down = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(runs_while_down, 2, "nothing more was dispatched while down");
    let (second, _stop_second) = stoppable_backend(&transport, &db).await;
    rollout_state(&second, &exec.exec_id, "completed").await;
    let rows = second.db().results(&exec.exec_id).unwrap();
    assert_eq!(rows.len(), 8);
    let runs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = runs.lines().collect();
    let distinct: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(
        (lines.len(), distinct.len()),
        (8, 8),
        "each pc ran once: {runs}"
    );
    drop(agents);
}
