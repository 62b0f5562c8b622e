//! The agent's fire path over the memory transport under paused tokio time:
//! a command runs once and reports, every gate (pinned, revoked, shell,
//! run-as, deadline, staleness, jitter revoke, request-id reuse, malformed
//! input, script objects) stops it with its reserved code, and config,
//! groups, inventory and pings reach the agent live.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kanade_core::names::OBJECT_SCRIPTS;
use kanade_core::policy::script::sha256_hex;
use kanade_core::transport::{Headers, KvConfig, ObjectStoreConfig, Transport};
use kanade_core::wire::{RunAs, Shell, Staleness};

async fn kv_put(transport: &Arc<dyn Transport>, bucket: &str, key: &str, value: &str) {
    let kv = transport.key_value(KvConfig::new(bucket)).await.unwrap();
    kv.put(key, Bytes::from(value.to_owned())).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_command_runs_once_and_reports() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut started = h
        .transport
        .messages()
        .subscribe("events.started.>")
        .await
        .unwrap();
    h.send("commands.all", &command("r1", "stdout=3")).await;
    let event = next_started(&mut started).await;
    assert_eq!(
        (event.request_id.as_str(), event.exec_id.as_deref()),
        ("r1", Some("exec-r1"))
    );
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.exit_code, result.skipped, result.attempts),
        (0, false, 1)
    );
    assert_eq!(result.stdout, "ooo");
    assert_eq!(
        (result.pc_id.as_str(), result.result_id.as_str()),
        ("pc-1", "r1-pc-1")
    );
    assert_eq!(result.manifest_id.as_deref(), Some("job"));
    assert!(h.agent.outbox().backlog().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_gate_reports_its_reserved_code() {
    let transport = memory();
    kv_put(&transport, "script_current", "pinned", "9").await;
    kv_put(&transport, "script_status", "revoked", "REVOKED").await;
    let h = Harness::start(transport).await;
    let mut results = results(&h.transport).await;
    let mut cases = Vec::new();
    let mut pinned = command("pin", "exit=0");
    pinned.id = "pinned".into();
    cases.push((pinned, 124));
    let mut revoked = command("rev", "exit=0");
    revoked.id = "revoked".into();
    cases.push((revoked, 126));
    let mut cmd = command("cmd", "exit=0");
    cmd.shell = Shell::Cmd;
    cases.push((cmd, 122));
    let mut user = command("user", "exit=0");
    user.run_as = RunAs::User;
    cases.push((user, 122));
    let mut late = command("late", "exit=0");
    late.deadline_at =
        Some(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 1, 0, 0, 0).unwrap());
    cases.push((late, 125));
    for (command, expected) in cases {
        h.send("commands.all", &command).await;
        let result = next_result(&mut results).await;
        assert_eq!(result.request_id, command.request_id);
        assert_eq!(
            (result.exit_code, result.skipped),
            (expected, true),
            "{result:?}"
        );
        assert!(!result.stderr.is_empty(), "the stop says why");
    }
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn strict_staleness_without_fresh_state_is_127() {
    let (_tx, connected) = tokio::sync::watch::channel(false);
    let h = Harness::start_in(memory(), tempfile::tempdir().unwrap(), |b| {
        b.connection_state(connected)
    })
    .await;
    let mut results = results(&h.transport).await;
    let mut strict = command("s1", "exit=0");
    strict.staleness = Staleness::Strict {
        max_cache_age: "5m".into(),
    };
    h.send("commands.all", &strict).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.skipped), (127, true));
    let mut unchecked = command("s2", "exit=0");
    unchecked.staleness = Staleness::Unchecked;
    h.send("commands.all", &unchecked).await;
    assert_eq!(next_result(&mut results).await.exit_code, 0);
}

#[tokio::test(start_paused = true)]
async fn a_revoke_during_jitter_wins() {
    // With seed 7 the first jitter draw in 0..60 s is well past one second.
    assert!(fastrand::Rng::with_seed(7).u64(0..60_000) > 2_000);
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut jittered = command("j1", "exit=0");
    jittered.jitter_secs = Some(60);
    h.send("commands.all", &jittered).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    kv_put(&h.transport, "script_status", "job", "REVOKED").await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.skipped), (126, true));
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_same_request_id_with_other_bytes_is_refused() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    h.send("commands.all", &command("dup", "exit=0")).await;
    assert_eq!(next_result(&mut results).await.exit_code, 0);
    h.send("commands.all", &command("dup", "exit=7")).await;
    assert_quiet(&mut results, Duration::from_secs(60)).await;
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn malformed_commands_are_answered_and_the_agent_keeps_running() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let log = h.transport.messages();
    log.publish(
        "commands.all",
        Headers::new(),
        Bytes::from_static(b"{not json"),
    )
    .await
    .unwrap();
    log.publish(
        "commands.all",
        Headers::new(),
        Bytes::from_static(br#"{"request_id":"bad1","id":"job","shell":"fish"}"#),
    )
    .await
    .unwrap();
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.request_id.as_str(), result.exit_code, result.skipped),
        ("bad1", 1, false)
    );
    assert!(
        result.stderr.contains("malformed command"),
        "{}",
        result.stderr
    );
    h.send("commands.all", &command("good", "exit=0")).await;
    assert_eq!(next_result(&mut results).await.request_id, "good");
}

#[tokio::test(start_paused = true)]
async fn script_objects_are_verified_and_cached() {
    let transport = memory();
    let store = transport
        .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
        .await
        .unwrap();
    let body = b"echo from the store";
    store.put("hello/1.0.0", &mut &body[..]).await.unwrap();
    let h = Harness::start(transport.clone()).await;
    let mut results = results(&transport).await;
    let mut by_object = command("o-ok", "");
    by_object.script_object = Some("hello/1.0.0".into());
    by_object.script_object_sha256 = Some(sha256_hex(body).to_uppercase());
    h.send("commands.all", &by_object).await;
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "echo from the store")
    );
    let cached = h
        .state
        .path()
        .join("scripts")
        .join(format!("{}.body", sha256_hex(body)));
    assert!(cached.exists());
    let mut tampered = by_object.clone();
    tampered.request_id = "o-bad".into();
    tampered.script_object_sha256 = Some("0".repeat(64));
    h.send("commands.all", &tampered).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.skipped), (1, false));
    assert!(result.stderr.contains("sha256"), "{}", result.stderr);
}

#[tokio::test(start_paused = true)]
async fn config_and_groups_apply_live() {
    let h = Harness::start(memory()).await;
    let mut results = results(&h.transport).await;
    let mut heartbeats = h
        .transport
        .messages()
        .subscribe("heartbeat.pc-1")
        .await
        .unwrap();
    kv_put(
        &h.transport,
        "agent_config",
        "global",
        r#"{"heartbeat_interval":"5s","max_local_concurrent":3}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.agent.concurrency_limit(), 3);
    assert_eq!(h.agent.effective_config().heartbeat_interval, "5s");
    while tokio::time::timeout(Duration::ZERO, heartbeats.next())
        .await
        .is_ok()
    {}
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        heartbeats.next().await.unwrap();
    }
    assert!(
        started.elapsed() <= Duration::from_secs(21),
        "{:?}",
        started.elapsed()
    );
    kv_put(
        &h.transport,
        "agent_groups",
        "pc-1",
        r#"{"groups":["canary"]}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.send("commands.group.canary", &command("g1", "exit=0"))
        .await;
    assert_eq!(next_result(&mut results).await.request_id, "g1");
    h.send("commands.group.other", &command("g2", "exit=0"))
        .await;
    assert_quiet(&mut results, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_inventory_is_published_at_start() {
    let transport = memory();
    let mut inventory = transport
        .messages()
        .subscribe("inventory.pc-1.hw")
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut settings = common::settings(state.path());
    settings.inventory = true;
    let agent = kanade_agent::Agent::builder(settings, transport.clone())
        .runner(Arc::new(FakeRunner::default()))
        .build()
        .unwrap();
    let run = tokio::spawn(agent.run(std::future::pending()));
    let message = tokio::time::timeout(Duration::from_secs(30), inventory.next())
        .await
        .unwrap()
        .unwrap();
    let hw: kanade_core::wire::HwInventory = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(hw.pc_id, "pc-1");
    assert!(
        hw.memory_bytes.unwrap_or(0) > 0 && hw.cpu_cores.unwrap_or(0) > 0,
        "{hw:?}"
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn pings_are_answered_with_a_heartbeat() {
    let h = Harness::start(memory()).await;
    let log = h.transport.messages();
    let mut replies = log.subscribe("reply.ping-1").await.unwrap();
    let headers = Headers::from([(
        kanade_agent::REPLY_TO_HEADER.to_owned(),
        "reply.ping-1".to_owned(),
    )]);
    log.publish("agents.pc-1.ping", headers, Bytes::new())
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .unwrap()
        .unwrap();
    let heartbeat: kanade_core::wire::Heartbeat = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(heartbeat.pc_id, "pc-1");
    assert!(heartbeat.agent_rss_bytes.unwrap_or(0) > 0);
}
