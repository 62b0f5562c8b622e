//! The README's "Securing a fleet" setup with the real binaries over a real
//! nats-server: `kanade-backend nats-auth` identities and authorization
//! block, `keygen` and an agent key ring in `enforce` mode, the backend
//! with `--nats-nkey`, `--signing-key` and `--agent-identities`, the agent
//! with `--nats-nkey`, `--command-keys`, `--signature-mode enforce`. A
//! signed exec runs (exit 0) without a single permission violation; an
//! unsigned command published straight to the agent comes back 123; the
//! server refuses the agent identity's publish to `commands.all`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kanade::core::names::subjects;
use kanade::core::transport::{Headers, Transport};
use kanade::core::wire::ExecResult;
use kanade::nats::test_server::NatsServer;
use kanade::nats::{Auth, NatsOptions, NatsTransport};

mod common;
use common::{free_port, nats_violations, wait_until, workspace_binary, KillOnDrop};

const PC: &str = "pc-001";

fn run(binary: &str, args: &[&str]) -> String {
    let output = Command::new(workspace_binary(binary))
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{binary} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_secured_fleet_runs_signed_commands_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seeds = d.join("nats");
    run(
        "kanade-backend",
        &["nats-auth", "--out", path(&seeds), "--agents", PC],
    );
    let key = d.join("signing.key");
    let entry = run(
        "kanade-backend",
        &["keygen", "--out", path(&key), "--kid", "k1"],
    );
    let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
    let ring = d.join("command-keys.json");
    std::fs::write(&ring, serde_json::to_string(&[entry]).unwrap()).unwrap();

    let log = d.join("nats-server.log");
    let block = std::fs::read_to_string(seeds.join("authorization.conf")).unwrap();
    let nats = NatsServer::start_with_config(&format!("{block}\nlogfile: {:?}\n", path(&log)));

    let db = d.join("backend.db");
    let token = run(
        "kanade-backend",
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "admin",
            "--db",
            path(&db),
        ],
    )
    .trim()
    .to_owned();
    let api = format!("127.0.0.1:{}", free_port());
    let _backend = KillOnDrop(
        Command::new(workspace_binary("kanade-backend"))
            .args([
                "--transport",
                &nats.url(),
                "--listen",
                &api,
                "--db",
                path(&db),
            ])
            .args(["--nats-nkey", path(&seeds.join("backend.nk"))])
            .args(["--signing-key", path(&key)])
            .args([
                "--agent-identities",
                path(&seeds.join("agent-identities.json")),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let kanade = |args: &[&str]| {
        let output = Command::new(workspace_binary("kanade"))
            .args(["--server", &format!("http://{api}")])
            .args(args)
            .env("KANADE_TOKEN", &token)
            .env("XDG_CONFIG_HOME", d.join("no-config"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    wait_until("the backend API", || kanade(&["agents"]).0);
    let _agent = KillOnDrop(
        Command::new(workspace_binary("kanade-agent"))
            .args(["--transport", &nats.url(), "--pc-id", PC])
            .args(["--state-dir", path(&d.join("agent"))])
            .args(["--nats-nkey", path(&seeds.join(format!("{PC}.nk")))])
            .args(["--command-keys", path(&ring), "--signature-mode", "enforce"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the agent's heartbeat", || {
        kanade(&["agents"]).1.contains(PC)
    });

    // A signed exec: the backend signs, the agent verifies and runs it, its
    // result proves its publisher and is stored.
    let job = d.join("hello.yaml");
    std::fs::write(
        &job,
        "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo signed-ok\n  timeout: 30s\n",
    )
    .unwrap();
    let (ok, out, err) = kanade(&["job", "apply", "-f", path(&job)]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kanade(&["--json", "exec", "hello", "--pcs", PC]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["exit_code"], 0, "{out}");
    assert_eq!(rows[0]["stdout"], "signed-ok\n");
    println!("signed exec result: {}", rows[0]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connect = |name: &str| {
            let mut options = NatsOptions::new(nats.url());
            options.auth = Auth::NKey(
                std::fs::read_to_string(seeds.join(format!("{name}.nk")))
                    .unwrap()
                    .trim()
                    .to_owned(),
            );
            if name != "backend" {
                options.inbox_prefix = Some(format!("_INBOX_{name}"));
            }
            options.request_timeout = Duration::from_secs(3);
            NatsTransport::connect(options)
        };
        // An unsigned command, straight onto the agent's subject (with the
        // backend's identity, which may publish it): refused with 123.
        let backend = connect("backend").await.unwrap();
        let mut results = backend
            .messages()
            .subscribe(subjects::RESULTS_FILTER)
            .await
            .unwrap();
        let command = serde_json::json!({
            "id": "hello", "version": "1.0.0", "request_id": "unsigned-1",
            "exec_id": "exec-unsigned", "shell": "sh", "script": "echo should-not-run",
            "timeout_secs": 30,
        });
        backend
            .messages()
            .publish(
                &format!("commands.pc.{PC}"),
                Headers::new(),
                Bytes::from(serde_json::to_vec(&command).unwrap()),
            )
            .await
            .unwrap();
        let refused: ExecResult = loop {
            let message = tokio::time::timeout(Duration::from_secs(20), results.next())
                .await
                .expect("a result for the unsigned command")
                .unwrap();
            let result: ExecResult = serde_json::from_slice(&message.payload).unwrap();
            if result.request_id == "unsigned-1" {
                break result;
            }
        };
        println!(
            "unsigned command result: exit {} skipped {} stderr {:?}",
            refused.exit_code, refused.skipped, refused.stderr
        );
        assert_eq!((refused.exit_code, refused.skipped), (123, false));
        assert!(refused.stderr.starts_with("refused: "), "{refused:?}");
        assert!(!refused.stdout.contains("should-not-run"));

        // The agent identity cannot publish a command at all.
        let agent = connect(PC).await.unwrap();
        agent
            .client()
            .publish(subjects::COMMANDS_ALL, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        agent.client().flush().await.unwrap();
    });
    wait_until("the server's violation for commands.all", || {
        nats_violations(&log)
            .iter()
            .any(|l| l.contains("\"commands.all\""))
    });
    let all = nats_violations(&log);
    println!("server log: {all:?}");
    assert_eq!(
        all.len(),
        1,
        "the binaries needed nothing their identities do not allow: {all:?}"
    );
}
