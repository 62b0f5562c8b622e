//! A rollout over real binaries on a real nats-server: the `kanade-backend`
//! binary, twelve `kanade-agent` processes, and the `kanade` CLI running
//! `exec --batch 3 --max-errors 1` of a script that fails on four chosen
//! pcs. It halts on the second failure, nothing is dispatched after the
//! halt, never more than three run at once; `rollout resume` after a new
//! version finishes the pcs not yet done.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kanade::nats::test_server::NatsServer;

mod common;
mod rollout_common;
use common::{wait_until, workspace_binary, KillOnDrop};
use rollout_common::most_overlapping;

const FAILING: [&str; 4] = ["pc-03", "pc-05", "pc-08", "pc-10"];

fn job_yaml(version: u32, failing: bool) -> String {
    let script = if failing {
        format!(
            "sleep 0.5; case \"$KANADE_PC_ID\" in {}) echo broken >&2; exit 1;; esac; echo ok",
            FAILING.join("|")
        )
    } else {
        "sleep 0.5; echo fixed".to_owned()
    };
    format!("id: patch\nversion: {version}\nexecute:\n  shell: sh\n  script: '{script}'\n  timeout: 30s\n")
}

#[test]
fn a_cli_rollout_on_nats_halts_on_the_second_failure_and_resumes_with_a_fix() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cli, _backend) = common::backend_binary(&nats.url(), dir.path(), "operator");
    let mut agents = Vec::new();
    for i in 1..=12 {
        let pc = format!("pc-{i:02}");
        agents.push(KillOnDrop(
            Command::new(workspace_binary("kanade-agent"))
                .args(["--transport", &nats.url(), "--pc-id", &pc])
                .arg("--state-dir")
                .arg(dir.path().join(&pc))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    wait_until("twelve agents online", || {
        cli.json(&["agents"]).as_array().map(Vec::len) == Some(12)
    });
    let job = dir.path().join("patch.yaml");
    std::fs::write(&job, job_yaml(1, true)).unwrap();
    let (code, out, err) = cli.run(&["job", "apply", "-f", job.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");

    let (code, out, err) = cli.run(&[
        "--json",
        "exec",
        "patch",
        "--all",
        "--batch",
        "3",
        "--max-errors",
        "1",
    ]);
    assert_eq!(code, Some(1), "a halted rollout exits 1: {out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let exec = rows[0]["exec_id"].as_str().unwrap().to_owned();
    let as_results = |rows: &[serde_json::Value]| -> Vec<kanade::backend::db::ResultRow> {
        rows.iter()
            .map(|r| serde_json::from_value(r.clone()).unwrap())
            .collect()
    };
    let status = cli.json(&["rollout", "status", &exec]);
    assert_eq!(status["rollout"]["state"], "halted", "{status}");
    let reason = status["rollout"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("2 errors of "), "{reason}");
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r["exit_code"] != 0)
        .map(|r| r["pc_id"].as_str().unwrap())
        .collect();
    // Halted on the second failure (pc-05, unless a busy machine let a
    // run after it finish first); one run still in flight then may fail
    // too, but nothing is dispatched after the halt.
    assert!(
        (2..=3).contains(&failed.len()) && failed.iter().all(|pc| FAILING.contains(pc)),
        "{failed:?}"
    );
    assert_eq!(&failed[..1], ["pc-03"]);
    let ran: BTreeSet<String> = rows
        .iter()
        .map(|r| r["pc_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!ran.contains("pc-10"), "{ran:?}");
    assert!(
        most_overlapping(&as_results(&rows)) <= 3,
        "window of 3 overfilled"
    );
    let pending = status["waves"][0]["counts"]["pending"].as_i64().unwrap();
    assert_eq!(pending as usize + ran.len(), 12, "{status}");
    // Nothing is dispatched after the halt.
    std::thread::sleep(Duration::from_secs(3));
    let later = cli.json(&["rollout", "status", &exec]);
    assert_eq!(later["waves"][0]["counts"]["pending"], pending, "{later}");
    assert_eq!(later["waves"][0]["counts"]["in_flight"], 0, "{later}");
    let (_, text, _) = cli.run(&["rollout", "status", &exec]);
    println!("{text}");
    assert!(text.contains("halted (2 errors of"), "{text}");

    // The fix, then resume: the pcs not done yet run version 2.
    std::fs::write(&job, job_yaml(2, false)).unwrap();
    let (code, out, err) = cli.run(&["job", "apply", "-f", job.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli.run(&["rollout", "resume", &exec]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": running"), "{out}");
    wait_until("the rollout completes", || {
        cli.json(&["rollout", "status", &exec])["rollout"]["state"] == "completed"
    });
    let rows = cli.json(&["results", &exec]);
    let rows = rows.as_array().unwrap();
    let pcs: BTreeSet<&str> = rows.iter().map(|r| r["pc_id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), pcs.len()), (12, 12), "each pc once");
    for row in rows {
        let pc = row["pc_id"].as_str().unwrap();
        if !ran.contains(pc) {
            assert_eq!(row["stdout"], "fixed\n", "{pc} ran version 2");
        }
    }
    assert!(most_overlapping(&as_results(rows)) <= 3);
    // Resuming a completed rollout is refused and says why.
    let (code, _, err) = cli.run(&["rollout", "resume", &exec]);
    assert_ne!(code, Some(0));
    assert!(err.contains("is completed"), "{err}");
}
