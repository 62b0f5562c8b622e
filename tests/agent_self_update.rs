//! Self-update end to end with the real binaries over a real nats-server:
//! `kanade agent publish` and `kanade agent rollout` on a `kanade-backend`
//! with a signing key, and a `kanade-agent` run the way
//! `packaging/kanade-agent.service` runs it — the unit's `ExecStartPre`
//! (the boot sentinel, from `.last-good`) and `ExecStart` lines, restarted
//! whenever it exits (`Restart=always`; here after 200 ms, not 2 s).
//!
//! The "new build" is the same binary with another version in its version
//! slot (the agent reads its version from a fixed-size slot, so a patched
//! copy is a different build without compiling twice). The test updates
//! 0.1.0 → 0.2.0; rolls back a broken 0.3.0 (a script that exits with
//! status 1) after its 3 failed starts and sees it quarantined; and has a
//! release with a forged signature and one whose binary was swapped in the
//! store refused, each with its ObsEvent, the agent staying on 0.2.0.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{backend_binary_with, workspace_binary, Cli};
use kanade::core::policy::release::{platform, release_object, ReleaseManifest, SignedRelease};
use kanade::core::policy::signature::CommandSigner;
use kanade::core::transport::{ObjectStoreConfig, Transport};
use kanade::nats::test_server::NatsServer;

const UNIT: &str = include_str!("../packaging/kanade-agent.service");
const MARKER: &[u8] = b"KANADE-AGENT-VERSION:";
const SLOT: usize = 64;
const PC: &str = "pc-up";

/// Where the version slot of `binary` starts (after the marker) and the
/// version it holds.
fn version_slot(binary: &[u8]) -> (usize, String) {
    let hits: Vec<usize> = binary
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i + MARKER.len())
        .filter(|at| binary[*at].is_ascii_digit())
        .collect();
    assert_eq!(hits.len(), 1, "one version slot in the agent binary");
    let at = hits[0];
    let end = binary[at..at + SLOT - MARKER.len()]
        .iter()
        .position(|b| *b == 0)
        .unwrap();
    (
        at,
        String::from_utf8(binary[at..at + end].to_vec()).unwrap(),
    )
}

/// `binary` reporting `version`.
fn with_version(binary: &[u8], version: &str) -> Vec<u8> {
    let (at, _) = version_slot(binary);
    let mut patched = binary.to_vec();
    let room = SLOT - MARKER.len();
    assert!(version.len() < room);
    patched[at..at + room].fill(0);
    patched[at..at + version.len()].copy_from_slice(version.as_bytes());
    patched
}

fn write_executable(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The unit's `key=` line, with the install paths replaced, as argv (and
/// whether a failure is ignored: the `-` prefix).
fn unit_command(key: &str, executable: &Path, config: &Path) -> (Vec<String>, bool) {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in the unit"));
    let (line, ignore_failure) = match line.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    let line = line
        .replace(
            "/usr/local/bin/kanade-agent",
            &executable.display().to_string(),
        )
        .replace("/etc/kanade/agent.toml", &config.display().to_string());
    (
        line.split_whitespace().map(str::to_owned).collect(),
        ignore_failure,
    )
}

/// `Restart=always` for the unit: the pre command, then the service,
/// again and again until dropped. Keeps every start's exit code and the
/// sentinel's words.
struct Supervisor {
    stop: Arc<AtomicBool>,
    running: Arc<Mutex<Option<Child>>>,
    exits: Arc<Mutex<Vec<Option<i32>>>>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(executable: &Path, config: &Path, stderr_dir: &Path) -> Self {
        let (pre, pre_may_fail) = unit_command("ExecStartPre=", executable, config);
        let (service, _) = unit_command("ExecStart=", executable, config);
        assert!(pre_may_fail, "the sentinel must not block a first start");
        assert!(UNIT.contains("Restart=always"));
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Mutex::new(None::<Child>));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr_dir = stderr_dir.to_path_buf();
        let thread = {
            let (stop, running, exits, log) =
                (stop.clone(), running.clone(), exits.clone(), log.clone());
            std::thread::spawn(move || {
                let mut start = 0;
                while !stop.load(Ordering::SeqCst) {
                    start += 1;
                    if let Ok(output) = Command::new(&pre[0]).args(&pre[1..]).output() {
                        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                        if !said.is_empty() {
                            log.lock().unwrap().push(said);
                        }
                    }
                    let stderr =
                        std::fs::File::create(stderr_dir.join(format!("start-{start}.log")))
                            .unwrap();
                    let child = Command::new(&service[0])
                        .args(&service[1..])
                        .stdout(Stdio::null())
                        .stderr(stderr)
                        .spawn()
                        .unwrap();
                    *running.lock().unwrap() = Some(child);
                    let code = loop {
                        let mut guard = running.lock().unwrap();
                        let Some(child) = guard.as_mut() else {
                            break None;
                        };
                        // Stopped while this start was on its way: end it.
                        if stop.load(Ordering::SeqCst) {
                            let _ = child.kill();
                        }
                        if let Some(status) = child.try_wait().unwrap() {
                            break status.code();
                        }
                        drop(guard);
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    log.lock()
                        .unwrap()
                        .push(format!("start {start}: the agent exited with {code:?}"));
                    exits.lock().unwrap().push(code);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Self {
            stop,
            running,
            exits,
            log,
            thread: Some(thread),
        }
    }

    fn exits(&self) -> Vec<Option<i32>> {
        self.exits.lock().unwrap().clone()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.running.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `ok` every 200 ms for up to 120 s: an update moves a ~46 MB
/// debug binary through the broker and restarts the agent, slow on a busy
/// 2-core machine.
fn wait_long(what: &str, mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// The version pc-up reports in its heartbeats, per the backend.
fn reported_version(cli: &Cli) -> Option<String> {
    let agents = cli.json(&["agents"]);
    agents
        .as_array()?
        .iter()
        .find(|a| a["pc_id"] == PC)
        .and_then(|a| a["agent_version"].as_str())
        .map(str::to_owned)
}

fn ok(cli: &Cli, args: &[&str]) -> String {
    let (code, out, err) = cli.run(args);
    assert_eq!(code, Some(0), "kanade {args:?}: {out}{err}");
    out
}

/// Waits (up to `secs`) for an ObsEvent of `kind` from pc-up.
async fn obs_event(sub: &mut kanade::core::transport::Subscription, kind: &str, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let message = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event within {secs} s"))
            .unwrap();
        let event: kanade::core::wire::ObsEvent = serde_json::from_slice(&message.payload).unwrap();
        if event.kind == kind {
            return;
        }
    }
}

#[test]
fn an_agent_updates_itself_rolls_back_a_broken_release_and_refuses_forgeries() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("signing.key");
    let entry = Command::new(workspace_binary("kanade-backend"))
        .args(["keygen", "--kid", "release-key", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(entry.status.success(), "{entry:?}");
    let entry: serde_json::Value = serde_json::from_slice(&entry.stdout).unwrap();
    let ring = d.join("command-keys.json");
    std::fs::write(&ring, serde_json::to_string(&[entry]).unwrap()).unwrap();
    let (cli, _backend) = backend_binary_with(
        &nats.url(),
        d,
        "admin",
        &["--signing-key", key.to_str().unwrap()],
    );

    // Installed as the unit expects: a binary and its config.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let executable = bin.join("kanade-agent");
    let original = std::fs::read(workspace_binary("kanade-agent")).unwrap();
    let (_, first_version) = version_slot(&original);
    let v1 = with_version(&original, "0.1.0");
    write_executable(&executable, &v1);
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "transport = {:?}\npc_id = {PC:?}\nstate_dir = {:?}\n\n[trust]\nkeys = {:?}\n",
            nats.url(),
            d.join("state").display().to_string(),
            ring.display().to_string()
        ),
    )
    .unwrap();
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let supervisor = Supervisor::start(&executable, &config, &logs);
    wait_long("the agent's first heartbeat", || {
        reported_version(&cli).as_deref() == Some("0.1.0")
    });
    println!("installed build reports {first_version}; patched copies report 0.1.0, 0.2.0");

    // 0.1.0 → 0.2.0.
    let v2 = with_version(&original, "0.2.0");
    let v2_file = d.join("kanade-agent-0.2.0");
    write_executable(&v2_file, &v2);
    let published: ReleaseManifest = serde_json::from_value(cli.json(&[
        "agent",
        "publish",
        "--version",
        "0.2.0",
        "--file",
        v2_file.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(published.size, v2.len() as u64);
    ok(
        &cli,
        &["agent", "rollout", "0.2.0", "--all", "--jitter", "1s"],
    );
    wait_long("the agent on 0.2.0", || {
        reported_version(&cli).as_deref() == Some("0.2.0")
    });
    assert_eq!(
        std::fs::read(&executable).unwrap(),
        v2,
        "E is the new build"
    );
    assert_eq!(
        std::fs::read(bin.join("kanade-agent.last-good")).unwrap(),
        v1,
        "the previous build is kept as last-good"
    );
    let pending = d.join("state").join("update").join("pending.json");
    wait_long("0.2.0 confirmed healthy", || !pending.exists());
    assert_eq!(supervisor.exits(), [Some(75)], "one exit, for the update");

    // A broken 0.3.0: three failed starts, then the sentinel restores 0.2.0.
    let broken = d.join("kanade-agent-0.3.0");
    write_executable(&broken, b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    ok(
        &cli,
        &[
            "agent",
            "publish",
            "--version",
            "0.3.0",
            "--file",
            broken.to_str().unwrap(),
        ],
    );
    // A pc's own scope overrides the global one (layered config).
    ok(
        &cli,
        &[
            "agent",
            "rollout",
            "0.3.0",
            "--pcs",
            PC,
            "--jitter",
            "0s",
            "--max-errors",
            "1",
        ],
    );
    wait_long("0.3.0 rolled back and quarantined", || {
        let spread = cli.json(&["agents", "--versions"]);
        spread["quarantined"]["0.3.0"] == serde_json::json!([PC])
            && reported_version(&cli).as_deref() == Some("0.2.0")
    });
    let exits = supervisor.exits();
    assert!(
        exits.ends_with(&[Some(75), Some(1), Some(1), Some(1)])
            && exits.iter().filter(|c| **c == Some(1)).count() == 3,
        "the install of 0.3.0, then its three failed starts: {exits:?}"
    );
    let starts_before_forgeries = exits.len();
    assert_eq!(std::fs::read(&executable).unwrap(), v2, "0.2.0 restored");
    // One quarantine used up the rollout's budget: it halted.
    wait_long("the 0.3.0 rollout halted", || {
        cli.json(&["agent", "status"])["status"] == "halted"
    });
    let status = cli.json(&["agent", "status"]);
    assert!(status["reason"].as_str().unwrap().contains(PC), "{status}");
    println!("agent rollout 0.3.0: {}", status["reason"]);

    // Forgeries: a description signed by another key, then a genuine
    // description whose binary was swapped in the store.
    let transport = runtime.block_on(async {
        kanade::nats::NatsTransport::connect(kanade::nats::NatsOptions::new(nats.url()))
            .await
            .unwrap()
    });
    let scope = runtime.block_on(async {
        let kv = transport
            .key_value(kanade::core::transport::KvConfig::new("agent_config"))
            .await
            .unwrap();
        kv.get(&format!("pcs.{PC}")).await.unwrap().unwrap().value
    });
    let scope: serde_json::Value = serde_json::from_slice(&scope).unwrap();
    // pc-up's own scope had no target before the rollout: the halt took
    // it out again, and the global one (0.2.0) applies.
    assert!(
        scope["target_version"].is_null(),
        "the halt restored the scope: {scope}"
    );
    let mut events = runtime.block_on(async {
        transport
            .messages()
            .subscribe(&format!("obs.{PC}"))
            .await
            .unwrap()
    });
    let store = runtime.block_on(async {
        transport
            .object_store(ObjectStoreConfig::new("agent_releases"))
            .await
            .unwrap()
    });
    let v4 = with_version(&original, "0.4.0");
    let v4_file = d.join("kanade-agent-0.4.0");
    write_executable(&v4_file, &v4);
    ok(
        &cli,
        &[
            "agent",
            "publish",
            "--version",
            "0.4.0",
            "--file",
            v4_file.to_str().unwrap(),
        ],
    );
    let manifest = ReleaseManifest {
        version: "0.4.0".into(),
        platform: platform(),
        size: v4.len() as u64,
        sha256: kanade::core::policy::script::sha256_hex(&v4),
    };
    let forger = CommandSigner::generate("release-key").unwrap();
    let forged = serde_json::to_vec(&SignedRelease::sign(&manifest, &forger, 1)).unwrap();
    runtime.block_on(async {
        store
            .put(
                &release_object(&platform(), "0.4.0"),
                &mut forged.as_slice(),
            )
            .await
            .unwrap();
    });
    // A pc's own scope overrides the global one (layered config).
    ok(
        &cli,
        &["agent", "rollout", "0.4.0", "--pcs", PC, "--jitter", "0s"],
    );
    runtime.block_on(obs_event(
        &mut events,
        "agent_update_refused_signature",
        120,
    ));

    let v5 = with_version(&original, "0.5.0");
    let v5_file = d.join("kanade-agent-0.5.0");
    write_executable(&v5_file, &v5);
    ok(
        &cli,
        &[
            "agent",
            "publish",
            "--version",
            "0.5.0",
            "--file",
            v5_file.to_str().unwrap(),
        ],
    );
    let swapped = with_version(&original, "0.5.1");
    runtime.block_on(async {
        store
            .put(
                &kanade::core::policy::release::binary_object(&platform(), "0.5.0"),
                &mut swapped.as_slice(),
            )
            .await
            .unwrap();
    });
    // A pc's own scope overrides the global one (layered config).
    ok(
        &cli,
        &["agent", "rollout", "0.5.0", "--pcs", PC, "--jitter", "0s"],
    );
    runtime.block_on(obs_event(&mut events, "agent_update_refused_digest", 120));
    assert_eq!(reported_version(&cli).as_deref(), Some("0.2.0"));
    assert_eq!(std::fs::read(&executable).unwrap(), v2, "nothing installed");
    assert_eq!(
        supervisor.exits().len(),
        starts_before_forgeries,
        "no restart for a refused release"
    );

    for line in supervisor.log.lock().unwrap().iter() {
        println!("{line}");
    }
    drop(supervisor);
}
