//! Push, not poll: `GET /api/executions/{id}?after=<fingerprint>&wait=…`
//! through the real router on a real listener. A waiting request returns
//! when a result is stored (not when its wait runs out), one with nothing
//! to wait for returns the row as it is, and a bad `wait` is refused.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use kanade_backend::db::ExecutionRow;
use kanade_backend::manifest::Target;
use kanade_backend::{Backend, BackendSettings};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::Transport;
use kanade_core::wire::ExecResult;
use serde_json::Value;

mod common;
use common::serve;

async fn get(url: String) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(&url).call().unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap())
    })
    .await
    .unwrap()
}

/// `pc`'s exit-0 answer to `exec`, finished now.
fn success(exec: &ExecutionRow, pc: &str, stdout: &str, stderr: &str) -> ExecResult {
    let now = chrono::Utc::now();
    ExecResult {
        result_id: format!("{}-{pc}", exec.request_id),
        request_id: exec.request_id.clone(),
        exec_id: Some(exec.exec_id.clone()),
        pc_id: pc.into(),
        exit_code: 0,
        skipped: false,
        stdout: stdout.into(),
        stderr: stderr.into(),
        started_at: now,
        finished_at: now,
        stdout_object: None,
        stderr_object: None,
        manifest_id: None,
        attempts: 1,
    }
}

/// A backend on a memory transport with the job `echo` applied.
async fn backend_with_echo(dir: &std::path::Path) -> Backend {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let backend = Backend::open(transport, BackendSettings::new(dir.join("b.db")))
        .await
        .unwrap();
    backend
        .apply_job(
            "id: echo\nversion: \"1\"\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_returns_when_a_result_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_with_echo(dir.path()).await;
    let exec = backend
        .exec(
            "echo",
            &Target {
                pcs: vec!["pc-1".into()],
                ..Target::default()
            },
        )
        .await
        .unwrap();
    let base = serve(backend.clone()).await;
    let id = exec.exec_id.clone();
    let fingerprint = exec.fingerprint();

    // Nothing changes: the row comes back as it was, with its fingerprint.
    let (status, same) = get(format!(
        "{base}/api/executions/{id}?after={fingerprint}&wait=200ms"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(same["succeeded"], 0);

    // Waiting up to 60 s; a result stored meanwhile answers it.
    let waiting = tokio::spawn(get(format!(
        "{base}/api/executions/{id}?after={fingerprint}&wait=60s"
    )));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "it waits while nothing changes");
    backend
        .db()
        .store_result(&success(&exec, "pc-1", "hi\n", ""), false)
        .unwrap();
    let (status, changed) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (changed["succeeded"].as_i64(), changed["status"].as_str()),
        (Some(1), Some("completed"))
    );

    // A row that differs from `after` comes back at once.
    let (_, at_once) = get(format!(
        "{base}/api/executions/{id}?after={fingerprint}&wait=60s"
    ))
    .await;
    assert_eq!(at_once["succeeded"], 1);

    // A wait that is not a duration is refused, naming it.
    let (status, refused) = get(format!("{base}/api/executions/{id}?after=x&wait=soon")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("wait"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_with_or_without_output_and_for_one_pc() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_with_echo(dir.path()).await;
    let target = Target {
        pcs: vec!["pc-1".into(), "pc-2".into()],
        ..Target::default()
    };
    let exec = backend.exec("echo", &target).await.unwrap();
    for pc in ["pc-1", "pc-2"] {
        let result = success(&exec, pc, &format!("out of {pc}"), &format!("err of {pc}"));
        backend.db().store_result(&result, false).unwrap();
    }
    let base = serve(backend.clone()).await;
    let results = format!("{base}/api/executions/{}/results", exec.exec_id);
    let (_, all) = get(results.clone()).await;
    assert_eq!(all[1]["stdout"], "out of pc-2");
    let (_, bare) = get(format!("{results}?output=false")).await;
    let bare = bare.as_array().unwrap();
    assert_eq!(bare.len(), 2);
    assert!(
        bare.iter().all(|r| r["stdout"] == "" && r["stderr"] == ""),
        "{bare:?}"
    );
    assert_eq!(bare[0]["exit_code"], 0);
    let (_, one) = get(format!("{results}?pc=pc-2")).await;
    let one = one.as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0]["pc_id"].as_str(), one[0]["stderr"].as_str()),
        (Some("pc-2"), Some("err of pc-2"))
    );
    let (status, refused) = get(format!("{results}?output=maybe")).await;
    assert_eq!(status, 400, "{refused}");
}
