//! End to end over a real nats-server: the `kanade-backend` and
//! `kanade-agent` binaries as processes, driven by the `kanade` CLI.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::process::{Command, Stdio};

use kanade::nats::test_server::NatsServer;

mod common;
use common::{free_port, wait_until, workspace_binary, KillOnDrop};

/// The admin token the test creates offline, for every CLI call.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn kanade(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(workspace_binary("kanade"))
        .arg("--server")
        .arg(server)
        .args(args)
        .env("KANADE_TOKEN", TOKEN.get().expect("token created first"))
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("kanade-test-no-config"),
        )
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_cli_drives_backend_and_agent_binaries_over_nats() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{api}");
    let created = Command::new(workspace_binary("kanade-backend"))
        .args([
            "token", "create", "--name", "ci-admin", "--role", "admin", "--db",
        ])
        .arg(dir.path().join("backend.db"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("kanade_"), "{token}");
    TOKEN.set(token).unwrap();
    let _backend = KillOnDrop(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", &nats.url(), "--listen", &api])
            .arg("--db")
            .arg(dir.path().join("backend.db"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the backend API", || kanade(&server, &["agents"]).0);
    let _agent = KillOnDrop(
        Command::new(workspace_binary("kanade-agent"))
            .args(["--transport", &nats.url(), "--pc-id", "nats-pc-1"])
            .arg("--state-dir")
            .arg(dir.path().join("agent"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the agent's heartbeat", || {
        kanade(&server, &["agents"]).1.contains("nats-pc-1")
    });

    let job = dir.path().join("hello.yaml");
    std::fs::write(&job, "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script_file: hello.sh\n  timeout: 30s\n").unwrap();
    std::fs::write(
        dir.path().join("hello.sh"),
        "echo hi from the script file\n",
    )
    .unwrap();
    let (ok, out, err) = kanade(&server, &["job", "apply", "-f", job.to_str().unwrap()]);
    assert!(ok && out.contains("applied job hello 1.0.0"), "{out}{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: bad\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: soon\n",
    )
    .unwrap();
    let (ok, _, err) = kanade(&server, &["job", "apply", "-f", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 6: execute.timeout"), "{err}");

    let (ok, out, err) = kanade(&server, &["--json", "exec", "hello", "--all"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["pc_id"], "nats-pc-1");
    assert_eq!(rows[0]["exit_code"], 0);
    assert_eq!(rows[0]["stdout"], "hi from the script file\n");

    let schedule = dir.path().join("nightly.yaml");
    std::fs::write(
        &schedule,
        "id: nightly\njob_id: hello\nwhen:\n  calendar:\n    at: \"02:30\"\n    days: [mon-fri]\ntarget:\n  all: true\ntz: utc\n",
    )
    .unwrap();
    let (ok, out, err) = kanade(
        &server,
        &["schedule", "apply", "-f", schedule.to_str().unwrap()],
    );
    assert!(ok && out.contains("applied schedule nightly"), "{out}{err}");
    let (ok, out, err) = kanade(&server, &["schedule", "preview", "nightly", "-n", "3"]);
    assert!(ok, "{err}");
    let times: Vec<&str> = out.lines().filter(|l| l.contains("T02:30:00")).collect();
    assert_eq!(times.len(), 3, "{out}");
    println!("schedule preview output:\n{out}");
    let (ok, out, err) = kanade(&server, &["schedule", "disable", "nightly"]);
    assert!(ok && out.contains("disabled"), "{out}{err}");
    let (ok, out, err) = kanade(&server, &["freeze", "set", "--reason", "change window"]);
    assert!(ok && out.contains("change window"), "{out}{err}");
    let (ok, out, _) = kanade(&server, &["freeze", "status"]);
    assert!(ok && out.contains("frozen"), "{out}");
    let (ok, out, _) = kanade(&server, &["freeze", "clear"]);
    assert!(ok && out.contains("not frozen"), "{out}");

    let (ok, out, err) = kanade(&server, &["revoke", "hello"]);
    assert!(ok && out.contains("job hello revoked"), "{out}{err}");
    let (ok, out, err) = kanade(&server, &["exec", "hello", "--pcs", "nats-pc-1"]);
    // A skip is not a success: exit 1 (see `kanade exec --help`).
    assert!(
        !ok && out.contains("1 skipped") && out.contains("126"),
        "{out}{err}"
    );
}
