//! The agent's fire path over the memory transport under paused tokio time:
//! retries and their backoff, kills, timeouts and a graceful stop, and where
//! the output goes (the object store, obs events, the outbox's stuck/).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kanade_core::names::OBJECT_RESULT_OUTPUT;
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{Headers, ObjectStoreConfig, Transport};
use kanade_core::wire::RetrySpec;
use tokio::io::AsyncReadExt;

#[tokio::test(start_paused = true)]
async fn retries_count_attempts_and_wait_the_backoff() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut failing = command("f1", "exit=3");
    failing.retry = Some(RetrySpec {
        max: 2,
        backoff_secs: 10,
    });
    let started = tokio::time::Instant::now();
    h.send("commands.all", &failing).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.attempts), (3, 3));
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let mut flaky = command("f2", "fail_first=4;exit=0");
    flaky.retry = Some(RetrySpec {
        max: 5,
        backoff_secs: 1,
    });
    h.send("commands.all", &flaky).await;
    let result = next_result(&mut results).await;
    // Runs 4 (the third of f1 was run 3) fails once more, then succeeds.
    assert_eq!((result.exit_code, result.attempts), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_kill_stops_the_run_and_any_retry() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut long = command("k1", "sleep=1000");
    long.retry = Some(RetrySpec {
        max: 5,
        backoff_secs: 1,
    });
    h.send("commands.all", &long).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.transport
        .messages()
        .publish("kill.exec-k1", Headers::new(), Bytes::new())
        .await
        .unwrap();
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.attempts), (-1, 1));
    assert!(result.stderr.contains("killed"), "{}", result.stderr);
}

/// Case 2 of the reliability issue: a kill that arrives while a command
/// waits (its jitter, a concurrency slot) stops it there; nothing runs.
#[tokio::test(start_paused = true)]
async fn case_2_a_kill_during_jitter_or_a_slot_wait_spawns_nothing() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut waiting = command("j1", "echo");
    waiting.jitter_secs = Some(3600);
    h.send("commands.all", &waiting).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.transport
        .messages()
        .publish("kill.exec-j1", Headers::new(), Bytes::new())
        .await
        .unwrap();
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.exit_code, result.skipped),
        (-1, false),
        "{result:?}"
    );
    assert!(
        result
            .stderr
            .contains("killed before start (while waiting for its jitter)"),
        "{}",
        result.stderr
    );
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Slots: fill every one with long runs, then kill one that waits.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in 0..cpus {
        h.send("commands.all", &command(&format!("busy{n}"), "sleep=1000"))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.send("commands.all", &command("s1", "echo")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.transport
        .messages()
        .publish("kill.exec-s1", Headers::new(), Bytes::new())
        .await
        .unwrap();
    let result = next_result(&mut results).await;
    assert_eq!(result.request_id, "s1", "{result:?}");
    assert!(
        result
            .stderr
            .contains("while waiting for a concurrency slot"),
        "{}",
        result.stderr
    );
    assert_eq!(
        h.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
        cpus as u32,
        "only the busy runs started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_with_minus_one() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut slow = command("t1", "sleep=1000");
    slow.timeout_secs = 5;
    h.send("commands.all", &slow).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.skipped), (-1, false));
    assert!(result.stderr.contains("timed out"), "{}", result.stderr);
}

#[tokio::test(start_paused = true)]
async fn large_output_goes_to_the_object_store() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    h.send("commands.all", &command("big", "stdout=300000"))
        .await;
    let result = next_result(&mut results).await;
    assert_eq!(result.stdout, "");
    assert_eq!(result.stdout_object.as_deref(), Some("big/pc-1/stdout"));
    assert_eq!(result.stderr_object, None);
    let store = h
        .transport
        .object_store(ObjectStoreConfig::new(OBJECT_RESULT_OUTPUT))
        .await
        .unwrap();
    let mut body = Vec::new();
    store
        .get("big/pc-1/stdout")
        .await
        .unwrap()
        .read_to_end(&mut body)
        .await
        .unwrap();
    assert_eq!(body.len(), 300_000);
}

#[tokio::test(start_paused = true)]
async fn emitted_ndjson_becomes_obs_events() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut obs = h.transport.messages().subscribe("obs.pc-1").await.unwrap();
    let mut emitting = command(
        "e1",
        "{\"kind\":\"logon\",\"payload\":{\"via\":\"echo\"}}\nnot an event",
    );
    emitting.emit = Some(kanade_core::wire::EmitConfig {
        kind: kanade_core::wire::EmitKind::Events,
    });
    h.send("commands.all", &emitting).await;
    let result = next_result(&mut results).await;
    assert_eq!(result.exit_code, 0);
    assert!(
        result
            .stderr
            .contains("1 emitted line(s) were not valid events"),
        "{}",
        result.stderr
    );
    let message = obs.next().await.unwrap();
    let event: kanade_core::wire::ObsEvent = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (
            event.pc_id.as_str(),
            event.kind.as_str(),
            event.source.as_str()
        ),
        ("pc-1", "logon", "job")
    );
    assert_eq!(event.payload["via"], "echo");
}

#[tokio::test(start_paused = true)]
async fn a_result_over_the_payload_limit_overflows_instead_of_sticking() {
    // A transport whose payload limit is below the size of this result:
    // its output goes to the object store (sized by its encoding, case 3 of
    // the reliability issue) and the result arrives; nothing is parked.
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::with_settings(
        kanade_core::transport::memory::MemorySettings {
            max_payload_bytes: 600,
            ..Default::default()
        },
    ));
    let h = Harness::start(transport.clone()).await;
    let mut results = results(&transport).await;
    h.send("commands.all", &command("huge", "stdout=2000"))
        .await;
    h.send("commands.all", &command("small", "exit=0")).await;
    let mut seen = [
        next_result(&mut results).await,
        next_result(&mut results).await,
    ];
    seen.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(seen[0].request_id, "huge");
    assert!(
        seen[0].stdout.is_empty() && seen[0].stdout_object.is_some(),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[1].request_id, "small");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        h.agent.outbox().stuck().is_empty(),
        "nothing parked for its size"
    );
    assert!(h.agent.outbox().backlog().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_kills_running_work_and_reports_it() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    h.send("commands.all", &command("g-run", "sleep=1000"))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _state = h.stop().await;
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.request_id.as_str(), result.exit_code),
        ("g-run", -1)
    );
    assert!(result.stderr.contains("killed"), "{}", result.stderr);
}
