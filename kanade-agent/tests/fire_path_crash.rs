//! The agent's fire path over the memory transport under paused tokio time,
//! across crashes, restarts and disconnects: replay runs a request once,
//! results wait in the outbox, interrupted and waiting work is reported or
//! resumed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kanade_core::names::StreamSpec;
use kanade_core::transport::fault::{FaultPlan, FaultRates, FaultyTransport};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{StreamConfig, Transport};

/// A memory transport behind a fault layer that injects nothing: the
/// bare transport (to watch and write beside the agent), the switch that
/// takes the agent's link down, and the agent's side.
fn faulty_memory() -> (
    MemoryTransport,
    Arc<kanade_core::transport::fault::FaultInjector>,
    Arc<dyn Transport>,
) {
    let memory = MemoryTransport::new();
    let faulty = FaultyTransport::new(
        Arc::new(memory.clone()),
        FaultPlan::Random(FaultRates::none(1)),
    );
    let injector = faulty.injector();
    (memory, injector, Arc::new(faulty))
}

#[tokio::test(start_paused = true)]
async fn replay_and_live_delivery_run_a_request_once() {
    let transport = memory();
    transport
        .messages()
        .create_stream(StreamConfig::from_spec(&StreamSpec::EXEC))
        .await
        .unwrap();
    let mut results = results(&transport).await;
    // Published before the agent first started: a brand-new agent does not
    // replay a fleet-wide one (issue 23, item 2); one that names its pc it
    // does — only replay can deliver it.
    publish_command(&transport, "commands.all", &command("early", "exit=0")).await;
    publish_command(&transport, "commands.pc.pc-1", &command("named", "exit=0")).await;
    let h = Harness::start(transport.clone()).await;
    assert_eq!(next_result(&mut results).await.request_id, "named");
    // Published while running: live subscription and replay consumer both deliver it.
    h.send("commands.all", &command("live", "exit=0")).await;
    assert_eq!(next_result(&mut results).await.request_id, "live");
    assert_quiet(&mut results, Duration::from_secs(120)).await;
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A restart replays the last command of each subject again: still once.
    let state = h.stop().await;
    let again = Harness::start_in(transport, state, |b| b).await;
    assert_quiet(&mut results, Duration::from_secs(120)).await;
    assert_eq!(
        again.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn results_wait_in_the_outbox_across_a_restart_and_drain_on_reconnect() {
    let (memory, injector, transport) = faulty_memory();
    let mut results = memory.messages().subscribe("results.*").await.unwrap();
    let h = Harness::start(transport.clone()).await;
    h.send("commands.all", &command("o1", "sleep=10")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    injector.disconnect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        h.agent.outbox().backlog().len(),
        1,
        "the result waits on disk"
    );
    let state = h.stop().await;
    injector.reconnect();
    let _again = Harness::start_in(transport, state, |b| b).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.request_id.as_str(), result.exit_code), ("o1", 0));
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_run_reports_121() {
    let transport = memory();
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    h.send("commands.all", &command("m1", "sleep=1000")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = h.crash().await;
    let _again = Harness::start_in(transport, state, |b| b).await;
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.request_id.as_str(), result.exit_code, result.skipped),
        ("m1", 121, false)
    );
    assert!(
        result.stderr.contains("outcome unknown"),
        "{}",
        result.stderr
    );
}

#[tokio::test(start_paused = true)]
async fn work_waiting_at_a_crash_is_resumed_on_restart() {
    let transport = memory();
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    let mut waiting = command("w1", "exit=0");
    waiting.jitter_secs = Some(60);
    h.send("commands.all", &waiting).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = h.crash().await;
    assert_quiet(&mut results, Duration::from_secs(120)).await;
    let again = Harness::start_in(transport, state, |b| b).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.request_id.as_str(), result.exit_code), ("w1", 0));
    assert_eq!(
        again.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn half_written_outbox_files_are_not_drained() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = kanade_agent::Outbox::open(dir.path(), memory().messages()).unwrap();
    std::fs::write(
        dir.path().join(".tmp-1-00000000000000000001-000000.json"),
        b"{\"subj",
    )
    .unwrap();
    assert!(
        outbox.backlog().is_empty(),
        "a temp file is not part of the backlog"
    );
    outbox.drain().await;
    assert!(
        outbox.stuck().is_empty(),
        "a temp file is never moved aside"
    );
    assert!(dir
        .path()
        .join(".tmp-1-00000000000000000001-000000.json")
        .exists());
}

/// Found by the fleet simulation: a command that arrived just before a crash
/// was admitted by a handler still in flight and started by the dead
/// agent, while the restarted agent resumed it from the ledger — it ran
/// twice. A halted (or stopped) agent now starts nothing; the restart runs
/// it once.
#[tokio::test(start_paused = true)]
async fn a_command_arriving_as_the_agent_crashes_runs_once() {
    let transport = memory();
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    let crashed_runner = h.runner.clone();
    // Published, then the crash before the agent's tasks get to run.
    h.send("commands.all", &command("late-arrival", "exit=0"))
        .await;
    let state = h.crash().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        crashed_runner
            .runs
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing runs on a crashed agent"
    );
    let again = Harness::start_in(transport, state, |b| b).await;
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.request_id.as_str(), result.exit_code),
        ("late-arrival", 0)
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        again.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// Found by the cluster tests under load: a result whose publishes failed
/// while its server restarted waited out a backoff of up to a minute after
/// the connection came back. A reconnect now clears the backoff.
#[tokio::test(start_paused = true)]
async fn a_reconnect_clears_the_outbox_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let memory = memory();
    let mut results = results(&memory).await;
    let faulty = FaultyTransport::new(memory.clone(), FaultPlan::Random(FaultRates::none(1)));
    let injector = faulty.injector();
    let outbox = kanade_agent::Outbox::open(dir.path(), faulty.messages()).unwrap();
    injector.disconnect();
    outbox
        .send(kanade_agent::OutboxEntry {
            subject: "results.pc-1".into(),
            message_id: "r1".into(),
            payload: serde_json::json!({
                "result_id": "r1-pc-1", "request_id": "r1", "pc_id": "pc-1", "exit_code": 0,
                "stdout": "", "stderr": "", "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:00:01Z",
            })
            .to_string(),
        })
        .await
        .unwrap();
    // Six failed drains: the next try is 16 s away.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        outbox.drain().await;
    }
    assert_eq!(outbox.backlog().len(), 1);
    injector.reconnect();
    outbox.drain().await;
    assert_eq!(outbox.backlog().len(), 1, "still backing off");
    outbox.retry_now();
    outbox.drain().await;
    assert!(outbox.backlog().is_empty());
    assert_eq!(next_result(&mut results).await.request_id, "r1");
}

/// A command waiting out its jitter when its job is revoked or its
/// execution killed, then the agent crashes and restarts while the broker
/// is away: the restarted agent's view of the KV state is empty, so the
/// resumed command must not start on it. It waits for the broker, reads
/// the revoke (skipped, 126) or the kill record (killed before start, -1),
/// and never runs.
#[tokio::test(start_paused = true)]
async fn a_command_resumed_while_offline_waits_for_the_kv_state() {
    use kanade_core::names::{BUCKET_EXEC_KILLS, BUCKET_SCRIPT_STATUS, SCRIPT_STATUS_REVOKED};
    use kanade_core::transport::KvConfig;
    for revoke in [true, false] {
        let (memory, injector, transport) = faulty_memory();
        let mut results = memory.messages().subscribe("results.*").await.unwrap();
        let h = Harness::start(transport.clone()).await;
        let mut waiting = command("w1", "exit=0");
        waiting.jitter_secs = Some(600);
        h.send("commands.all", &waiting).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if revoke {
            memory
                .key_value(KvConfig::new(BUCKET_SCRIPT_STATUS))
                .await
                .unwrap()
                .put("job", SCRIPT_STATUS_REVOKED.into())
                .await
                .unwrap();
        } else {
            let record = kanade_core::wire::KillRecord {
                exec_id: "exec-w1".into(),
                killed_at: chrono::Utc::now(),
                signature: Default::default(),
            };
            memory
                .key_value(KvConfig::new(BUCKET_EXEC_KILLS))
                .await
                .unwrap()
                .put("exec-w1", serde_json::to_vec(&record).unwrap().into())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let state = h.crash().await;
        injector.disconnect();
        let again = Harness::start_in(transport, state, |b| b).await;
        // Well past the jitter: on an empty view it would have run by now.
        tokio::time::sleep(Duration::from_secs(1800)).await;
        assert_eq!(
            again.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "revoke {revoke}: ran on an unread KV state"
        );
        injector.reconnect();
        let result = next_result(&mut results).await;
        let expected = if revoke { (126, true) } else { (-1, false) };
        assert_eq!(
            (
                result.request_id.as_str(),
                (result.exit_code, result.skipped)
            ),
            ("w1", expected),
            "revoke {revoke}: {}",
            result.stderr
        );
        assert_eq!(
            again.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}
