//! The security model on the real binaries over a real nats-server: the
//! backend refuses to start without a way to authenticate anyone (and
//! `--insecure-no-auth` off loopback); no token → 401 on every `/api`
//! route; a viewer gets 403 on exec; an operator scoped to a group gets 403
//! on `exec --all` and 200 on its group; `kanade audit verify` passes, then
//! fails naming the entry after a row of the audit table is changed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kanade::backend::http::routes::ROUTES;
use kanade::nats::test_server::NatsServer;

mod common;
use common::{create_token, free_port, workspace_binary, KillOnDrop};

fn backend_cmd(db: &Path, args: &[&str]) -> Output {
    Command::new(workspace_binary("kanade-backend"))
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap()
}

fn kanade(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(workspace_binary("kanade"));
    command
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("KANADE_TOKEN")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("kanade-test-no-config"),
        );
    if let Some(token) = token {
        command.env("KANADE_TOKEN", token);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn status_of(url: &str, method: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        _ => agent.post(url).send_json(serde_json::json!({})),
    };
    response.unwrap().status().as_u16()
}

#[test]
fn the_backend_refuses_to_start_unless_someone_can_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backend.db");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = backend_cmd(&db, &["--listen", &listen]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = text(&out);
    assert!(
        said.contains("no usable API token") && said.contains("kanade-backend token create"),
        "{said}"
    );
    let out = backend_cmd(&db, &["--listen", "0.0.0.0:0", "--insecure-no-auth"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out).contains("loopback"), "{}", text(&out));
}

#[test]
fn tokens_roles_scopes_and_the_audit_trail_on_the_real_binaries() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backend.db");
    let admin = create_token(&db, "admin", "admin", &[]);
    let viewer = create_token(&db, "viewer", "viewer", &[]);
    let canary = create_token(&db, "canary-op", "operator", &["--groups", "canary"]);
    let api = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{api}");
    let _backend = KillOnDrop(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", &nats.url(), "--listen", &api])
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !kanade(&server, Some(&admin), &["agents"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "backend did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let job = dir.path().join("hello.yaml");
    std::fs::write(
        &job,
        "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
    )
    .unwrap();
    let out = kanade(
        &server,
        Some(&admin),
        &["job", "apply", "-f", job.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));

    // No token: 401 on every /api route.
    for rule in ROUTES {
        let url = format!(
            "{server}{}",
            rule.path.replace("{id}", "hello").replace("{name}", "x")
        );
        assert_eq!(status_of(&url, rule.method), 401, "{} {url}", rule.method);
    }
    let out = kanade(&server, None, &["agents"]);
    assert!(
        !out.status.success() && text(&out).contains("401"),
        "{}",
        text(&out)
    );

    let out = kanade(
        &server,
        Some(&viewer),
        &["exec", "hello", "--all", "--no-wait"],
    );
    assert!(
        !out.status.success() && text(&out).contains("403"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("needs the operator role"),
        "{}",
        text(&out)
    );

    let out = kanade(
        &server,
        Some(&canary),
        &["exec", "hello", "--all", "--no-wait"],
    );
    assert!(
        !out.status.success() && text(&out).contains("403"),
        "{}",
        text(&out)
    );
    let out = kanade(
        &server,
        Some(&canary),
        &["exec", "hello", "--groups", "canary", "--no-wait"],
    );
    // Allowed (not 403); no agent runs, so the CLI says nothing was
    // targeted and exits 2.
    assert!(
        out.status.code() == Some(2) && text(&out).contains("nothing targeted"),
        "{}",
        text(&out)
    );

    let out = kanade(&server, Some(&admin), &["audit", "verify"]);
    assert!(
        out.status.success() && text(&out).contains("intact"),
        "{}",
        text(&out)
    );
    let out = kanade(&server, Some(&admin), &["audit", "list"]);
    assert!(
        text(&out).contains("canary-op") && text(&out).contains("denied"),
        "{}",
        text(&out)
    );

    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 2", [])
        .unwrap();
    let out = kanade(&server, Some(&admin), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("BROKEN at seq 2"), "{}", text(&out));
    let out = backend_cmd(&db, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("seq 2"), "{}", text(&out));
}
