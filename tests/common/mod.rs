//! Helpers shared by the cross-crate tests: the workspace's binaries
//! (`kanade-agent`, `kanade-backend`, `kanade`), which live in other
//! packages than these tests, so Cargo gives no `CARGO_BIN_EXE_*`.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The path of a workspace binary, current with the sources.
///
/// The first call in a test process runs `cargo build --workspace
/// --all-targets` (the build `scripts/test` already did, so normally a
/// no-op) in this test's profile and target directory: a test never drives
/// a stale binary, even when run alone (`cargo test --test …`) after an
/// edit.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executables live in <target>/<profile>/deps")
            .to_path_buf();
        build_workspace(&profile_dir);
        profile_dir
    });
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing after building",
        path.display()
    );
    path
}

/// Builds every target of the workspace into `profile_dir`
/// (`<target dir>/<profile>`; `debug` is Cargo's `dev` profile).
fn build_workspace(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut build = std::process::Command::new(env!("CARGO"));
    // Cargo sets these for a running test; build scripts that track them
    // (ring's tracks CARGO_MANIFEST_DIR) would see a change and rebuild.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--workspace",
            "--all-targets",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "building the workspace binaries failed");
}

/// A child process killed (and reaped) when the test lets go of it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` with its output discarded; killed when dropped.
pub fn spawn_quiet(command: &mut std::process::Command) -> KillOnDrop {
    KillOnDrop(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `kanade-backend ARGS… --db DB` run to completion (it must succeed):
/// what it printed, trimmed.
pub fn backend_command(db: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(workspace_binary("kanade-backend"))
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `kanade-backend token create --name NAME --role ROLE EXTRA…`: the new
/// token.
pub fn create_token(db: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    backend_command(db, &args)
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 50 ms until it holds; fails naming `what` after 15 s.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 15 s");
}

/// Blocking [`wait_for`] for tests that drive processes: polls `ok` every
/// 100 ms; fails naming `what` after 30 s.
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// The "Publish Violation" / "Subscription Violation" lines of a
/// nats-server log file (empty if there is none yet).
pub fn nats_violations(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" Violation - "))
        .map(str::to_owned)
        .collect()
}

/// Waits until the backend has a heartbeat from `pc`.
pub async fn wait_for_agent(backend: &kanade::backend::Backend, pc: &str) {
    wait_for(&format!("{pc}'s heartbeat reaches the backend"), || {
        let db = backend.db().clone();
        async move {
            db.agents(chrono::Utc::now() - chrono::Duration::seconds(90))
                .unwrap()
                .iter()
                .any(|a| a.pc_id == pc)
        }
    })
    .await;
}

/// Sets the fleet's heartbeat interval to 1 s: a first heartbeat sent
/// before the backend's projector subscribed is not a 30 s wait.
pub async fn heartbeat_every_second(
    transport: &std::sync::Arc<dyn kanade::core::transport::Transport>,
) {
    transport
        .key_value(kanade::core::transport::KvConfig::new(
            kanade::core::names::BUCKET_AGENT_CONFIG,
        ))
        .await
        .unwrap()
        .put(
            kanade::core::names::KEY_AGENT_CONFIG_GLOBAL,
            bytes::Bytes::from_static(br#"{"heartbeat_interval":"1s"}"#),
        )
        .await
        .unwrap();
}

/// Opens a backend on `transport`, runs it on a task, and applies the job
/// `hello` (`echo hello`).
pub async fn running_backend_with_hello(
    transport: std::sync::Arc<dyn kanade::core::transport::Transport>,
    settings: kanade::backend::BackendSettings,
) -> kanade::backend::Backend {
    heartbeat_every_second(&transport).await;
    let backend = kanade::backend::Backend::open(transport, settings)
        .await
        .unwrap();
    let running = backend.clone();
    tokio::spawn(async move { running.run(std::future::pending()).await.unwrap() });
    backend
        .apply_job(
            "id: hello\nversion: 1\nexecute:\n  shell: sh\n  script: echo hello\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    backend
}

/// A running agent and the sender that stops it (gracefully).
pub type RunningAgent = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Runs `agent` on a task until the returned sender fires.
pub fn run_agent(agent: kanade::agent::Agent) -> RunningAgent {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, task)
}

/// The execution once it is over (`completed` or `cancelled`); fails with
/// its row and results after 90 s. An agent's outbox backs a failing
/// publish off up to 64 s (250 ms doubling), and a client that fails over
/// to another cluster member sees no disconnect to clear that backoff: a
/// result that failed during a rolling restart may come that late.
pub async fn finished(
    backend: &kanade::backend::Backend,
    exec_id: &str,
) -> kanade::backend::db::ExecutionRow {
    let mut last = None;
    for _ in 0..1800 {
        let row = backend.db().execution(exec_id).unwrap().unwrap();
        if row.status == "completed" || row.status == "cancelled" {
            return row;
        }
        last = Some(row);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "execution not over within 90 s: {last:?}; results {:?}",
        backend.db().results(exec_id).unwrap()
    );
}

/// The `kanade` CLI against one backend, with one token.
pub struct Cli {
    /// The backend's API URL.
    pub server: String,
    /// The API token.
    pub token: String,
}

impl Cli {
    /// Runs `kanade ARGS`: exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = std::process::Command::new(workspace_binary("kanade"))
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .env("KANADE_TOKEN", &self.token)
            .env(
                "XDG_CONFIG_HOME",
                std::env::temp_dir().join("kanade-test-no-config"),
            )
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs `kanade --json ARGS` and parses its output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (_, out, err) = self.run(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"))
    }
}

/// Starts the `kanade-backend` binary on `transport` with its database in
/// `dir`, after creating a token of `role` there; returns the CLI bound to
/// it (once its API answers) and the process.
pub fn backend_binary(transport: &str, dir: &Path, role: &str) -> (Cli, KillOnDrop) {
    backend_binary_with(transport, dir, role, &[])
}

/// [`backend_binary`] with more arguments for `kanade-backend`
/// (`--signing-key`, …).
pub fn backend_binary_with(
    transport: &str,
    dir: &Path,
    role: &str,
    extra: &[&str],
) -> (Cli, KillOnDrop) {
    let api = format!("127.0.0.1:{}", free_port());
    let created = std::process::Command::new(workspace_binary("kanade-backend"))
        .args(["token", "create", "--name", "ops", "--role", role, "--db"])
        .arg(dir.join("backend.db"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let cli = Cli {
        server: format!("http://{api}"),
        token: String::from_utf8(created.stdout).unwrap().trim().to_owned(),
    };
    let backend = KillOnDrop(
        std::process::Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", transport, "--listen", &api])
            .args(extra)
            .arg("--db")
            .arg(dir.join("backend.db"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the backend API", || cli.run(&["agents"]).0 == Some(0));
    (cli, backend)
}

/// The text of the job manifest `examples/jobs/<name>`.
pub fn example_job(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/jobs")
            .join(name),
    )
    .unwrap()
}
