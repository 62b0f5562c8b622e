//! Case 1 of the reliability issue: a kill is durable. An agent that learns
//! of a command only after its execution was killed — replayed from EXEC
//! when it comes back, or resumed from its ledger after a crash — never
//! starts it and reports exit -1 "killed before start" (not skipped: -1 is
//! what a kill gives, a skip would claim a gate chose not to run it). Other
//! executions of the same job still run; on an enforcing host a kill record
//! must carry a valid signature, so a forged record kills nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod common;
use common::{finished, run_agent, wait_for};
use kanade::agent::trust::SignatureMode;
use kanade::agent::{Agent, AgentSettings, Stage};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings, FireOptions};
use kanade::core::names::{SubjectToken, BUCKET_EXEC_KILLS};
use kanade::core::policy::signature::CommandSigner;
use kanade::core::transport::{KvConfig, Transport};
use kanade::core::wire::KillRecord;

const PC: &str = "pc-a";

struct Setup {
    transport: Arc<dyn Transport>,
    backend: Backend,
    dir: tempfile::TempDir,
    signer: Option<CommandSigner>,
}

async fn setup(url: impl FnOnce(&Path) -> String, signed: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let transport = kanade::transport::open(&url(dir.path())).await.unwrap();
    let signer = signed.then(|| CommandSigner::from_seed("k1", [11; 32]));
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.reap_grace = Duration::from_secs(600);
    settings.signer = signer.clone().map(Arc::new);
    let backend = common::running_backend_with_hello(transport.clone(), settings).await;
    Setup {
        transport,
        backend,
        dir,
        signer,
    }
}

impl Setup {
    fn state(&self) -> PathBuf {
        self.dir.path().join(PC)
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("marker")
    }

    /// An agent on the shared state directory; `enforce` with the
    /// backend's key in its ring.
    fn agent(&self) -> Agent {
        let mut settings = AgentSettings::new(SubjectToken::pc(PC).unwrap(), self.state());
        settings.inventory = false;
        if let Some(signer) = &self.signer {
            let ring_file = self.dir.path().join("ring.json");
            let entries = vec![signer.ring_entry(None, None)];
            std::fs::write(&ring_file, serde_json::to_string(&entries).unwrap()).unwrap();
            settings.trust.keys_file = Some(ring_file);
            settings.trust.mode = SignatureMode::Enforce;
        }
        Agent::builder(settings, self.transport.clone())
            .build()
            .unwrap()
    }

    /// Starts an agent, waits until the backend saw it, stops it.
    async fn agent_seen_then_stopped(&self) {
        let (stop, task) = run_agent(self.agent());
        common::wait_for_agent(&self.backend, PC).await;
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

fn pc() -> Target {
    Target {
        pcs: vec![PC.into()],
        ..Target::default()
    }
}

/// Runs the job `touch` (its script creates the marker file) on the pc.
async fn exec_touch(setup: &Setup, options: FireOptions) -> String {
    let yaml = format!(
        "id: touch\nversion: 1\nexecute:\n  shell: sh\n  script: 'touch {}; echo ran'\n  timeout: 30s\n",
        setup.marker().display()
    );
    setup
        .backend
        .apply_job(&yaml, &Default::default())
        .await
        .unwrap();
    setup
        .backend
        .fire("touch", &pc(), options)
        .await
        .unwrap()
        .exec_id
}

async fn killed_before_start(setup: &Setup, exec_id: &str) {
    // The kill marked it cancelled at once; wait for the agent's word.
    wait_for("the killed command's result", || {
        let db = setup.backend.db().clone();
        let id = exec_id.to_owned();
        async move { !db.results(&id).unwrap().is_empty() }
    })
    .await;
    let done = setup.backend.db().execution(exec_id).unwrap().unwrap();
    assert_eq!(done.status, "cancelled");
    let rows = setup.backend.db().results(exec_id).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].exit_code, rows[0].skipped),
        (-1, false),
        "{rows:?}"
    );
    assert!(
        rows[0].stderr.contains("killed before start"),
        "{:?}",
        rows[0].stderr
    );
    assert_eq!(rows[0].stdout, "", "nothing ran");
    assert!(
        !setup.marker().exists(),
        "the script's side effect happened"
    );
}

async fn offline_agent_learns_of_the_kill(url: impl FnOnce(&Path) -> String, signed: bool) {
    let setup = setup(url, signed).await;
    setup.agent_seen_then_stopped().await;
    // The agent is down: exec, kill (→ cancelled), start it again.
    let killed = exec_touch(&setup, FireOptions::default()).await;
    setup.backend.kill(&killed).await.unwrap();
    let (stop, task) = run_agent(setup.agent());
    killed_before_start(&setup, &killed).await;
    // Executions not killed still run, the same job's too.
    let other = setup.backend.exec("hello", &pc()).await.unwrap().exec_id;
    let done = finished(&setup.backend, &other).await;
    assert_eq!(done.succeeded, 1, "an execution not killed runs: {done:?}");
    let again = exec_touch(&setup, FireOptions::default()).await;
    assert_eq!(finished(&setup.backend, &again).await.succeeded, 1);
    assert!(setup.marker().exists());
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_an_agent_back_from_offline_never_starts_a_killed_command() {
    offline_agent_learns_of_the_kill(|_| "memory".to_owned(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_on_the_file_transport_too() {
    offline_agent_learns_of_the_kill(|dir| format!("file:{}", dir.join("bus").display()), false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_an_enforcing_agent_obeys_a_signed_kill_record() {
    offline_agent_learns_of_the_kill(|_| "memory".to_owned(), true).await;
}

/// A command admitted before a crash (waiting out its jitter) is resumed on
/// the next start — unless its execution was killed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_a_command_resumed_after_a_crash_is_not_started_once_killed() {
    let setup = setup(|_| "memory".to_owned(), false).await;
    let agent = setup.agent();
    let (_stop, task) = run_agent(agent.clone());
    let exec_id = exec_touch(
        &setup,
        FireOptions {
            jitter_secs: Some(3600),
            ..FireOptions::default()
        },
    )
    .await;
    wait_for("the command admitted", || {
        let agent = agent.clone();
        async move { !agent.ledger().in_stage(Stage::Pending).is_empty() }
    })
    .await;
    // Crash: nothing reported, the ledger keeps the command pending.
    agent.halt();
    task.abort();
    setup.backend.kill(&exec_id).await.unwrap();
    let (stop, task) = run_agent(setup.agent());
    killed_before_start(&setup, &exec_id).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// On an enforcing host a kill record must verify: one written by someone
/// without the signing key (straight into the bucket) kills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_a_forged_kill_record_kills_nothing_on_an_enforcing_agent() {
    let setup = setup(|_| "memory".to_owned(), true).await;
    setup.agent_seen_then_stopped().await;
    let exec_id = exec_touch(&setup, FireOptions::default()).await;
    // Same key id, another key: what a stolen broker credential can write.
    let attacker = CommandSigner::from_seed("k1", [12; 32]);
    let forged = KillRecord {
        exec_id: exec_id.clone(),
        killed_at: chrono::Utc::now(),
        signature: attacker
            .sign(exec_id.as_bytes(), chrono::Utc::now().timestamp_millis())
            .into_iter()
            .collect(),
    };
    setup
        .transport
        .key_value(KvConfig::new(BUCKET_EXEC_KILLS))
        .await
        .unwrap()
        .put(&exec_id, Bytes::from(serde_json::to_vec(&forged).unwrap()))
        .await
        .unwrap();
    let (stop, task) = run_agent(setup.agent());
    let done = finished(&setup.backend, &exec_id).await;
    assert_eq!(done.succeeded, 1, "{done:?}");
    assert!(setup.marker().exists());
    stop.send(()).unwrap();
    task.await.unwrap();
}
