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
use common::{run_agent, wait_for, RunningAgent};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::db::ResultRow;
use kanade::backend::manifest::Target;
use kanade::backend::rollout::spec::RolloutSpec;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::Transport;

/// The pcs whose run of version 1 fails.
const FAILING: [&str; 4] = ["pc-03", "pc-05", "pc-08", "pc-10"];

fn job(version: u32, failing: bool) -> String {
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

struct Fleet {
    backend: Backend,
    transport: Arc<dyn Transport>,
    _agents: Vec<RunningAgent>,
    _dir: tempfile::TempDir,
}

async fn fleet(n: usize, canaries: &[&str]) -> Fleet {
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

fn spec(json: &str) -> RolloutSpec {
    serde_json::from_str(json).unwrap()
}

/// Runs `job` on `target` through the rollout `json`, as a test operator.
async fn rollout_exec(
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

fn all() -> Target {
    Target {
        all: true,
        ..Target::default()
    }
}

/// The most runs that overlapped in time, from the results' start and
/// finish times.
fn most_overlapping(rows: &[ResultRow]) -> usize {
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

async fn rollout_state(backend: &Backend, exec_id: &str, state: &str) {
    wait_for(&format!("the rollout is {state}"), || {
        let backend = backend.clone();
        let id = exec_id.to_owned();
        let state = state.to_owned();
        async move { backend.rollout_status(&id).await.unwrap().rollout.state == state }
    })
    .await;
}

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
