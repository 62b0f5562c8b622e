//! Issue 23, the first day of an operator: items 1–3 through the library
//! (real backend, real agents, real `sh`, the memory transport).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{finished, run_agent, running_backend_with_hello, wait_for, wait_for_agent};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings, KillOutcome};
use kanade::core::names::SubjectToken;
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::Transport;

fn agent(transport: &Arc<dyn Transport>, dir: &Path, pc: &str) -> Agent {
    let mut settings = AgentSettings::new(SubjectToken::pc(pc).unwrap(), dir.join(pc));
    settings.inventory = false;
    Agent::builder(settings, transport.clone()).build().unwrap()
}

fn pcs(list: &[&str]) -> Target {
    Target {
        pcs: list.iter().map(|p| (*p).to_owned()).collect(),
        ..Target::default()
    }
}

fn all() -> Target {
    Target {
        all: true,
        ..Target::default()
    }
}

async fn setup(online_window: Duration) -> (Arc<dyn Transport>, Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.online_window = online_window;
    let backend = running_backend_with_hello(transport.clone(), settings).await;
    (transport, backend, dir)
}

/// Item 1: a pc named explicitly is a target before its first heartbeat;
/// the execution is not "completed" until it answered; an answer from a
/// pc that was not counted joins the targets (late) so counters never
/// exceed `targeted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_1_named_pcs_are_targets_and_late_answers_join_them() {
    let (transport, backend, dir) = setup(Duration::from_secs(2)).await;
    // (The common setup sends heartbeats every second: online means
    // seen in the last 2 s.)
    let early = backend.exec("hello", &pcs(&["pc-new"])).await.unwrap();
    assert_eq!((early.targeted, early.status.as_str()), (1, "pending"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = backend.db().execution(&early.exec_id).unwrap().unwrap();
    assert_eq!(
        row.status, "pending",
        "not completed before pc-new answered"
    );
    let _new = run_agent(agent(&transport, dir.path(), "pc-new"));
    let done = finished(&backend, &early.exec_id).await;
    assert_eq!(
        (done.targeted, done.succeeded, done.late_targets),
        (1, 1, 0)
    );

    // pc-late has run before (it is registered) but is offline when an
    // --all exec goes out: it is not counted; when it comes back it
    // replays the command and answers, and joins the targets.
    let (stop, task) = run_agent(agent(&transport, dir.path(), "pc-late"));
    wait_for_agent(&backend, "pc-late").await;
    let warm = backend.exec("hello", &pcs(&["pc-late"])).await.unwrap();
    finished(&backend, &warm.exec_id).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // past the online window
    let fleet = backend.exec("hello", &all()).await.unwrap();
    assert_eq!(fleet.targeted, 1, "only pc-new is online: {fleet:?}");
    let _back = run_agent(agent(&transport, dir.path(), "pc-late"));
    wait_for("pc-late's late answer", || {
        let db = backend.db().clone();
        let id = fleet.exec_id.clone();
        async move { db.results(&id).unwrap().len() == 2 }
    })
    .await;
    let row = backend.db().execution(&fleet.exec_id).unwrap().unwrap();
    assert_eq!(
        (row.targeted, row.succeeded, row.late_targets),
        (2, 2, 1),
        "{row:?}"
    );
    assert!(row.succeeded + row.failed + row.skipped <= row.targeted);
    assert_eq!(row.status, "completed");
    let targets = backend.db().targets(&fleet.exec_id).unwrap();
    assert_eq!(
        targets,
        [("pc-late".to_owned(), false), ("pc-new".to_owned(), true)]
    );
}

/// Item 2: a brand-new agent does not run a fleet-wide command sent
/// before it first started (no result, no side effect); a `kitting` job's
/// command it does run; commands sent while a known agent was off still
/// replay (item 1 above shows that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_2_a_new_agent_does_not_run_older_commands_unless_kitting() {
    let (transport, backend, dir) = setup(Duration::from_secs(90)).await;
    let marker = dir.path().join("rebooted");
    backend
        .apply_job(
            &format!(
                "id: reboot\nversion: 1\nexecute:\n  shell: sh\n  script: 'touch {}'\n  timeout: 30s\n",
                marker.display()
            ),
            &Default::default(),
        )
        .await
        .unwrap();
    backend
        .apply_job(
            "id: kit\nversion: 1\nkitting: true\nexecute:\n  shell: sh\n  script: echo kitted\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let _old = run_agent(agent(&transport, dir.path(), "pc-old"));
    wait_for_agent(&backend, "pc-old").await;
    let reboot = backend.exec("reboot", &all()).await.unwrap();
    let kit = backend.exec("kit", &all()).await.unwrap();
    finished(&backend, &reboot.exec_id).await;
    std::fs::remove_file(&marker).unwrap();
    // Fleet-wide commands sit in EXEC; a new machine joins.
    let _new = run_agent(agent(&transport, dir.path(), "pc-fresh"));
    wait_for("the kitting command on the new agent", || {
        let db = backend.db().clone();
        let id = kit.exec_id.clone();
        async move {
            db.results(&id)
                .unwrap()
                .iter()
                .any(|r| r.pc_id == "pc-fresh")
        }
    })
    .await;
    // A command sent after it joined runs there as usual.
    let after = backend.exec("hello", &pcs(&["pc-fresh"])).await.unwrap();
    assert_eq!(finished(&backend, &after.exec_id).await.succeeded, 1);
    let rows = backend.db().results(&reboot.exec_id).unwrap();
    assert_eq!(rows.len(), 1, "only pc-old ran the reboot: {rows:?}");
    assert!(!marker.exists(), "the new agent ran an old command");
    let kit_row = backend.db().execution(&kit.exec_id).unwrap().unwrap();
    assert_eq!((kit_row.succeeded, kit_row.late_targets), (2, 1));
}

/// Item 3: a kill of a finished execution changes nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_3_killing_a_finished_execution_changes_nothing() {
    let (transport, backend, dir) = setup(Duration::from_secs(90)).await;
    let _a = run_agent(agent(&transport, dir.path(), "pc-a"));
    wait_for_agent(&backend, "pc-a").await;
    let exec = backend.exec("hello", &pcs(&["pc-a"])).await.unwrap();
    let before = finished(&backend, &exec.exec_id).await;
    assert_eq!(before.status, "completed");
    for _ in 0..2 {
        assert_eq!(
            backend.kill(&exec.exec_id).await.unwrap(),
            KillOutcome::AlreadyFinished {
                status: "completed".into()
            }
        );
    }
    let after = backend.db().execution(&exec.exec_id).unwrap().unwrap();
    assert_eq!(after, before, "history is not rewritten");
    // A kill that went through, killed again: still cancelled, said so.
    let open = backend.exec("hello", &pcs(&["pc-nowhere"])).await.unwrap();
    assert_eq!(
        backend.kill(&open.exec_id).await.unwrap(),
        KillOutcome::Killed
    );
    assert_eq!(
        backend.kill(&open.exec_id).await.unwrap(),
        KillOutcome::AlreadyFinished {
            status: "cancelled".into()
        }
    );
}

/// Item 5: a pin holds until it is cleared (apply and exec say so; agents
/// skip other versions with 124), names a version that was applied, and a
/// version's content is immutable unless replaced on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_5_pins_hold_and_versions_are_immutable() {
    let (transport, backend, dir) = setup(Duration::from_secs(90)).await;
    let _a = run_agent(agent(&transport, dir.path(), "pc-a"));
    wait_for_agent(&backend, "pc-a").await;
    let yaml = |version: &str, script: &str| {
        format!("id: app\nversion: {version}\nexecute:\n  shell: sh\n  script: {script}\n  timeout: 30s\n")
    };
    let none = Default::default();
    backend
        .apply_job(&yaml("1.0.0", "echo one"), &none)
        .await
        .unwrap();
    backend.pin("app", "1.0.0").await.unwrap();
    let newer = backend
        .apply_job_with(&yaml("1.1.0", "echo two"), &none, false)
        .await
        .unwrap();
    assert_eq!(newer.pinned.as_deref(), Some("1.0.0"), "apply says so");
    let current = transport
        .key_value(kanade::core::transport::KvConfig::new(
            kanade::core::names::BUCKET_SCRIPT_CURRENT,
        ))
        .await
        .unwrap()
        .get("app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.value, "1.0.0", "the pin holds");
    let refused = backend.exec("app", &pcs(&["pc-a"])).await.unwrap_err();
    assert!(refused.to_string().contains("pinned to 1.0.0"), "{refused}");
    // A schedule's fire of the newer version is skipped by agents (124).
    let fired = backend
        .fire("app", &pcs(&["pc-a"]), Default::default())
        .await
        .unwrap();
    finished(&backend, &fired.exec_id).await;
    let rows = backend.db().results(&fired.exec_id).unwrap();
    assert_eq!((rows[0].exit_code, rows[0].skipped), (124, true));

    // A pin names an applied version.
    let err = backend.pin("app", "0.9.0").await.unwrap_err();
    assert!(err.to_string().contains("no version \"0.9.0\""), "{err}");
    backend.pin("app", "1.0.0").await.unwrap();

    // Versions are immutable: the same content again is fine, other
    // content (script or manifest) is refused unless replaced.
    backend
        .apply_job(&yaml("1.1.0", "echo two"), &none)
        .await
        .unwrap();
    for changed in [
        yaml("1.1.0", "echo three"),
        yaml("1.1.0", "echo two").replace("30s", "60s"),
    ] {
        let err = backend.apply_job(&changed, &none).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("already applied with other content"),
            "{err}"
        );
    }
    let replaced = backend
        .apply_job_with(&yaml("1.1.0", "echo three"), &none, true)
        .await
        .unwrap();
    assert!(replaced.replaced);

    // Cleared: the latest version runs.
    assert_eq!(backend.unpin("app").await.unwrap(), "1.1.0");
    let exec = backend.exec("app", &pcs(&["pc-a"])).await.unwrap();
    finished(&backend, &exec.exec_id).await;
    let rows = backend.db().results(&exec.exec_id).unwrap();
    assert_eq!((rows[0].exit_code, rows[0].stdout.as_str()), (0, "three\n"));
}

/// The fenced block of `README.md` that starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(first_line)
        .unwrap_or_else(|| panic!("README has no block starting {first_line:?}"));
    let end = readme[start..].find("```").unwrap() + start;
    readme[start..end].to_owned()
}

/// Item 11: the README's walk-through material is real — its job and
/// schedule manifests are accepted as written, its complete `nats.conf`
/// (store_dir, max_file_store, sync_interval) starts a real nats-server with JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_11_the_readme_examples_work_as_written() {
    let job = readme_block("# hello.yaml");
    let job = kanade::backend::manifest::parse_job(&job, &Default::default())
        .unwrap_or_else(|e| panic!("README hello.yaml: {e}"));
    assert_eq!((job.id.as_str(), job.version.as_str()), ("hello", "1.0.0"));
    let schedule = readme_block("# nightly.yaml");
    let schedule = kanade::backend::manifest::parse_schedule(&schedule)
        .unwrap_or_else(|e| panic!("README nightly.yaml: {e}"));
    assert_eq!(schedule.job_id, "hello");
    let on_agents = readme_block("# compliance.yaml");
    let on_agents = kanade::backend::manifest::parse_schedule(&on_agents)
        .unwrap_or_else(|e| panic!("README compliance.yaml: {e}"));
    assert_eq!(on_agents.runs_on.as_deref(), Some("agent"));

    let conf = readme_block("listen: 127.0.0.1:4222");
    assert!(
        conf.contains("store_dir")
            && conf.contains("max_file_store")
            && conf.contains("sync_interval: always")
    );
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = conf
        .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
        .replace(
            "./nats-data",
            &dir.path().join("data").display().to_string(),
        );
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let server = kanade::nats::test_server::find_nats_server().unwrap();
    let _nats = common::KillOnDrop(
        std::process::Command::new(server)
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let mut connected = None;
    for _ in 0..100 {
        if let Ok(t) =
            kanade::nats::NatsTransport::connect(kanade::nats::NatsOptions::new(&url)).await
        {
            connected = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nats = connected.expect("the README's nats.conf starts a server");
    kanade::nats::provision::provision(&nats)
        .await
        .expect("JetStream is on: every stream and bucket provisions");
}
