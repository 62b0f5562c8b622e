//! The real process runner: exit codes, capture cap, cwd, timeout and kill
//! terminating the whole process group.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Duration;

use kanade_agent::{ProcessRunner, RunEnd, RunSpec, ScriptRunner};
use kanade_core::wire::{RunAs, Shell};
use tokio::sync::watch;

fn spec(script: &str, timeout: Duration) -> RunSpec {
    RunSpec {
        shell: Shell::Sh,
        script: script.to_owned(),
        cwd: None,
        timeout,
        run_as: RunAs::System,
        request_id: "r1".into(),
        attempt: 1,
        process_record: None,
        env: vec![("KANADE_PC_ID".into(), "pc-test".into())],
    }
}

fn runner() -> ProcessRunner {
    ProcessRunner {
        grace: Duration::from_millis(500),
        capture_cap: 1024,
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[tokio::test]
async fn runs_sh_and_reports_exit_codes_and_output() {
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec("echo hi; echo oops >&2; exit 3", Duration::from_secs(10)),
            signal,
        )
        .await;
    assert_eq!(out.end, RunEnd::Exited(3));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");
    assert!(out.finished_at >= out.started_at);
    assert!(runner().supports(Shell::Sh));
    assert!(!runner().supports(Shell::Cmd), "no cmd.exe on this host");
}

#[tokio::test]
async fn the_script_sees_the_agents_variables() {
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec("echo \"$KANADE_PC_ID\"", Duration::from_secs(10)),
            signal,
        )
        .await;
    assert_eq!(out.stdout, b"pc-test\n");
}

#[tokio::test]
async fn capture_is_capped_with_head_and_tail() {
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec(
                "printf 'HEAD'; head -c 5000 /dev/zero | tr '\\0' x; printf 'TAIL'",
                Duration::from_secs(10),
            ),
            signal,
        )
        .await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("HEAD") && text.ends_with("TAIL"), "{text}");
    assert!(text.contains("5008 bytes in all, 1024 kept"), "{text}");
}

#[tokio::test]
async fn cwd_is_honoured_and_a_bad_cwd_fails_to_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let (_kill, signal) = watch::channel(false);
    let mut in_dir = spec("pwd", Duration::from_secs(10));
    in_dir.cwd = Some(dir.path().display().to_string());
    let out = runner().run(in_dir, signal.clone()).await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        dir.path().canonicalize().unwrap().display().to_string()
    );
    let mut missing = spec("true", Duration::from_secs(10));
    missing.cwd = Some("/no/such/dir".into());
    let out = runner().run(missing, signal).await;
    assert_eq!(out.end, RunEnd::SpawnFailed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not start"));
}

#[tokio::test]
async fn a_timeout_terminates_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!("sleep 600 & echo $! > {}; wait", pid_file.display());
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(spec(&script, Duration::from_secs(1)), signal)
        .await;
    assert_eq!(out.end, RunEnd::TimedOut);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    let child = std::fs::read_to_string(&pid_file).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !alive(&child),
        "the background child {child} survived the timeout"
    );
}

#[tokio::test]
async fn a_kill_terminates_the_run_even_if_it_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!(
        "trap '' TERM; sleep 600 & echo $! > {}; wait; wait",
        pid_file.display()
    );
    let (kill, signal) = watch::channel(false);
    let run = tokio::spawn(async move {
        runner()
            .run(spec(&script, Duration::from_secs(600)), signal)
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.end, RunEnd::Killed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("killed on request"));
    let child = std::fs::read_to_string(&pid_file).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!alive(&child), "the child {child} survived the kill");
}

/// Case 4 of the reliability issue: a process the script leaves behind in
/// a session of its own keeps the pipes open. The output read until the
/// grace ended is kept (it used to be thrown away), with a note.
#[tokio::test]
async fn case_4_output_survives_an_escapee_holding_the_pipes() {
    let (_kill, signal) = watch::channel(false);
    let started = std::time::Instant::now();
    let out = runner()
        .run(
            spec(
                "echo before; echo warn >&2; setsid sleep 6 & echo after",
                Duration::from_secs(30),
            ),
            signal,
        )
        .await;
    assert_eq!(out.end, RunEnd::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("warn\n"), "{stderr}");
    assert!(stderr.contains("held open"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the runner gave up on the pipes after its grace, not when the escapee ended"
    );
}

/// The rest of the kind: what an escapee writes during the grace is kept
/// too, the capture cap still holds, and processes left in the script's
/// own group are killed (with a note) instead of holding the output.
#[tokio::test]
async fn case_4_late_writes_caps_and_leftovers_in_the_group() {
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec(
                "echo before; setsid sh -c 'sleep 0.3; echo late; sleep 6' & echo after",
                Duration::from_secs(30),
            ),
            signal,
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "before\nafter\nlate\n",
        "written within the grace, so captured"
    );

    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec(
                "head -c 5000 /dev/zero | tr '\\0' x; setsid sleep 6 &",
                Duration::from_secs(30),
            ),
            signal,
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("5000 bytes in all, 1024 kept"),
        "the cap still applies: {stdout}"
    );

    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec(
                "echo before; sleep 30 & echo $! > /dev/stderr; echo after",
                Duration::from_secs(30),
            ),
            signal,
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = stderr.lines().next().unwrap();
    assert!(stderr.contains("were killed"), "{stderr}");
    for _ in 0..50 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the leftover in the group was killed");

    // A script that cleans up after itself gets no note.
    let (_kill, signal) = watch::channel(false);
    let out = runner()
        .run(
            spec("sleep 0.2 & wait; echo done", Duration::from_secs(30)),
            signal,
        )
        .await;
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.stderr, b"");
}
