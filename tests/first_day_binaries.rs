//! Issue 23, items 6, 7 and 9 with the real binaries: `kanade-backend` and
//! `kanade-agent` as processes sharing a file transport, driven by the
//! `kanade` CLI.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, wait_until, workspace_binary, KillOnDrop};

struct Cli {
    server: String,
    token: String,
    home: std::path::PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(workspace_binary("kanade"))
            .args(["--server", &self.server])
            .args(args)
            .env("KANADE_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &self.home)
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn job(dir: &Path, id: &str, script: &str) -> String {
    let path = dir.join(format!("{id}.yaml"));
    std::fs::write(
        &path,
        format!("id: {id}\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: '{script}'\n  timeout: 30s\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// A `kanade-backend` binary on a file transport in `d` (the bus URL for
/// agents), with an admin token for the CLI, answering.
fn backend_on_file_bus(d: &Path) -> (String, Cli, KillOnDrop) {
    let bus = format!("file:{}", d.join("bus").display());
    let db = d.join("backend.db");
    let created = Command::new(workspace_binary("kanade-backend"))
        .args(["token", "create", "--name", "ci", "--role", "admin", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let api = format!("127.0.0.1:{}", free_port());
    let backend = KillOnDrop(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", &bus, "--listen", &api])
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = Cli {
        server: format!("http://{api}"),
        token,
        home: d.join("home"),
    };
    wait_until("the backend API", || cli.run(&["agents"]).status.success());
    (bus, cli, backend)
}

/// Items 6 and 9: `kanade exec` exit codes a script can rely on, and
/// every command answering in sentences (with a header, a state line).
#[test]
fn item_6_and_9_exit_codes_and_readable_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bus, cli, _backend) = backend_on_file_bus(d);
    let _agent = KillOnDrop(
        Command::new(workspace_binary("kanade-agent"))
            .args(["--transport", &bus, "--pc-id", "pc-1", "--group", "web"])
            .arg("--state-dir")
            .arg(d.join("agent"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the agent", || {
        String::from_utf8_lossy(&cli.run(&["agents"]).stdout).contains("pc-1")
    });
    for (id, script) in [
        ("ok", "echo fine"),
        ("bad", "echo broken; exit 3"),
        ("slow", "sleep 20"),
    ] {
        let out = cli.run(&["job", "apply", "-f", &job(d, id, script)]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let code = |args: &[&str]| {
        let out = cli.run(args);
        (out.status.code(), text(&out))
    };
    let (status, out) = code(&["exec", "ok", "--pcs", "pc-1"]);
    assert_eq!(status, Some(0), "all succeeded: {out}");
    assert!(out.contains("completed — 1 succeeded"), "{out}");
    let (status, out) = code(&["exec", "bad", "--pcs", "pc-1"]);
    assert_eq!(status, Some(1), "some failed: {out}");
    let (status, out) = code(&["exec", "ok", "--groups", "nobody"]);
    assert_eq!(status, Some(2), "nothing targeted: {out}");
    assert!(out.contains("nothing targeted"), "{out}");
    let (status, out) = code(&["exec", "slow", "--pcs", "pc-1", "--wait", "1s"]);
    assert_eq!(status, Some(3), "not all answered: {out}");
    assert!(out.contains("not every target answered within 1s"), "{out}");
    let slow = out.split_whitespace().nth(1).unwrap().to_owned();
    let (status, _) = code(&["exec"]);
    assert_eq!(status, Some(2), "usage");

    // Item 9: sentences, headers, state lines, an executions list.
    let (_, out) = code(&["kill", &slow]);
    assert!(out.contains(&format!("execution {slow} killed")), "{out}");
    let (_, out) = code(&["kill", &slow]);
    assert!(out.contains("had already finished (cancelled)"), "{out}");
    let (_, out) = code(&["revoke", "ok"]);
    assert!(out.starts_with("job ok revoked"), "{out}");
    let (status, out) = code(&["exec", "ok", "--pcs", "pc-1"]);
    assert_eq!(status, Some(1), "a skip is not a success: {out}");
    let (_, out) = code(&["activate", "ok"]);
    assert!(out.starts_with("job ok active again"), "{out}");
    let (_, out) = code(&["pin", "ok", "1.0.0"]);
    assert!(out.starts_with("job ok pinned to 1.0.0"), "{out}");
    let (_, out) = code(&["results", &slow]);
    assert!(
        out.starts_with(&format!("execution {slow} (slow 1.0.0): cancelled")),
        "{out}"
    );
    let (_, out) = code(&["executions", "--job", "bad"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("execution"), "a header: {out}");
    assert_eq!(lines.len(), 2, "one execution of bad: {out}");
    assert!(lines[1].contains("bad") && lines[1].contains("completed"));
    let (_, out) = code(&["executions", "--status", "cancelled", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["exec_id"], slow.as_str());
    // Item 5 on the CLI: a pin names an applied version; a changed version
    // needs --replace, which the audit trail records.
    let (status, out) = code(&["pin", "ok", "0.9.0"]);
    assert!(status != Some(0) && out.contains("no version"), "{out}");
    let changed = job(d, "ok", "echo changed");
    let (status, out) = code(&["job", "apply", "-f", &changed]);
    assert!(status != Some(0) && out.contains("--replace"), "{out}");
    let (status, out) = code(&["job", "apply", "-f", &changed, "--replace"]);
    assert_eq!(status, Some(0), "{out}");
    let (_, out) = code(&["audit", "--json"]);
    assert!(
        out.contains("job.replace") && out.contains("ok/1.0.0"),
        "{out}"
    );
    let (_, out) = code(&["unpin", "ok"]);
    assert!(out.starts_with("job ok unpinned"), "{out}");
    // Item 8 on the CLI: each problem once, no "line ?".
    let broken = d.join("broken.yaml");
    std::fs::write(
        &broken,
        "id: broken\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: soon\n",
    )
    .unwrap();
    let (status, out) = code(&["job", "apply", "-f", broken.to_str().unwrap()]);
    assert!(status != Some(0), "{out}");
    assert_eq!(out.matches("execute.timeout").count(), 1, "{out}");
    assert!(
        out.contains("line 6: execute.timeout: \"soon\" is not a duration"),
        "{out}"
    );
    let no_target = d.join("no-target.yaml");
    std::fs::write(&no_target, "id: s\njob_id: ok\nwhen:\n  per_pc: once\n").unwrap();
    let (status, out) = code(&["schedule", "apply", "-f", no_target.to_str().unwrap()]);
    assert!(
        status != Some(0) && out.contains("target: names no agents"),
        "{out}"
    );
    assert!(!out.contains("line ?"), "{out}");
    let (_, out) = code(&["schedule", "list"]);
    assert!(out.starts_with("schedule"), "a header: {out}");
    for (binary, first) in [
        ("kanade", "The kanade operator CLI"),
        ("kanade-backend", "Runs the kanade backend"),
        ("kanade-agent", "Runs the kanade agent"),
    ] {
        let help = Command::new(workspace_binary(binary))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        assert!(help.starts_with(first), "{binary} --help: {help}");
    }
}

/// Item 7: the agent binary needs a transport that can reach a backend,
/// and says what it is doing at its default log level: the endpoints it
/// cannot reach (each back-off step), what it subscribed to.
#[test]
fn item_7_the_agent_needs_a_transport_and_says_what_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("kanade-agent"))
        .args(["--pc-id", "pc-1"])
        .arg("--state-dir")
        .arg(dir.path().join("a"))
        .env_remove("KANADE_TRANSPORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no transport: give --transport"),
        "{}",
        text(&out)
    );

    // Nothing listens on this port: the agent says so, with the URL.
    let port = free_port();
    let log = dir.path().join("unreachable.log");
    let child = KillOnDrop(
        Command::new(workspace_binary("kanade-agent"))
            .args([
                "--transport",
                &format!("nats://127.0.0.1:{port}"),
                "--pc-id",
                "pc-1",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("b"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    wait_until("the unreachable-server warnings", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("NATS not reachable").count() >= 2
    });
    drop(child);
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        text_log.contains(&format!("127.0.0.1:{port}")),
        "{text_log}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // On a transport it can use, it says what it subscribed to.
    let log = dir.path().join("file.log");
    let _child = KillOnDrop(
        Command::new(workspace_binary("kanade-agent"))
            .args([
                "--transport",
                &format!("file:{}", dir.path().join("bus").display()),
                "--pc-id",
                "pc-1",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("c"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the subscriptions in the log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("subscribed") && text.contains("commands.pc.pc-1")
    });
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Item 4: `kill -9` the agent while a script runs; on restart the agent
/// terminates what its previous life left running (the recorded process
/// group, checked by start time) before reporting 121.
#[test]
fn item_4_a_crashed_agents_script_is_terminated_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bus, cli, _backend) = backend_on_file_bus(d);
    let agent = || {
        Command::new(workspace_binary("kanade-agent"))
            .args(["--transport", &bus, "--pc-id", "pc-1"])
            .arg("--state-dir")
            .arg(d.join("agent"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = agent();
    wait_until("the agent", || {
        String::from_utf8_lossy(&cli.run(&["agents"]).stdout).contains("pc-1")
    });
    let pidfile = d.join("script.pid");
    let out = cli.run(&[
        "job",
        "apply",
        "-f",
        &job(
            d,
            "long",
            &format!("echo $$ > {}; exec sleep 300", pidfile.display()),
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli.run(&["--json", "exec", "long", "--pcs", "pc-1", "--no-wait"]);
    let exec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exec_id = exec["exec_id"].as_str().unwrap().to_owned();
    wait_until("the script's pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| !t.trim().is_empty())
    });
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A real crash: SIGKILL, no chance to clean up.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(alive(pid), "the orphan outlives the agent");
    let _second = KillOnDrop(agent());
    wait_until("the 121 result", || {
        String::from_utf8_lossy(&cli.run(&["--json", "results", &exec_id]).stdout)
            .contains("\"exit_code\": 121")
    });
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the restarted agent terminated the orphan");
    let out = cli.run(&["results", &exec_id]);
    assert!(text(&out).contains("121"), "{}", text(&out));
    let json =
        String::from_utf8_lossy(&cli.run(&["--json", "results", &exec_id]).stdout).into_owned();
    assert!(json.contains("has been terminated"), "{json}");
}
