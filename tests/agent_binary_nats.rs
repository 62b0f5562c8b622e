//! End to end over NATS: a real nats-server, the `kanade-agent` binary as a
//! child process, and an `echo hi` round trip.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::process::{Command as Process, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kanade::core::transport::{Headers, Transport};
use kanade::core::wire::{Command, EventStarted, ExecResult};
use kanade::nats::provision::provision;
use kanade::nats::test_server::NatsServer;

mod common;
use common::{workspace_binary, KillOnDrop};
use kanade::nats::{NatsOptions, NatsTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_hi_round_trip_through_the_binary() {
    let server = NatsServer::start();
    let backend = NatsTransport::connect(NatsOptions::new(server.url()))
        .await
        .unwrap();
    provision(&backend).await.unwrap();
    let log = backend.messages();
    let mut results = log.subscribe("results.*").await.unwrap();
    let mut started = log.subscribe("events.started.>").await.unwrap();

    let state = tempfile::tempdir().unwrap();
    let _agent = KillOnDrop(
        Process::new(workspace_binary("kanade-agent"))
            .args(["--transport", &server.url(), "--pc-id", "e2e-pc", "-v"])
            .arg("--state-dir")
            .arg(state.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the agent is up: it answers pings with a heartbeat.
    let mut heartbeats = log.subscribe("heartbeat.e2e-pc").await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), heartbeats.next())
        .await
        .expect("the agent starts and sends a heartbeat")
        .unwrap();

    let command: Command = serde_json::from_value(serde_json::json!({
        "id": "echo-hi", "version": "1.0.0", "request_id": "e2e-1", "exec_id": "e2e-exec",
        "shell": "sh", "script": "echo hi", "timeout_secs": 30, "jitter_secs": null,
        "run_as": "system", "staleness": {"mode": "cached"}
    }))
    .unwrap();
    let ack = log
        .publish(
            "commands.pc.e2e-pc",
            Headers::new(),
            Bytes::from(serde_json::to_vec(&command).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        ack.map(|a| a.stream),
        Some("EXEC".to_owned()),
        "EXEC captures commands"
    );

    let event: EventStarted = serde_json::from_slice(
        &tokio::time::timeout(Duration::from_secs(30), started.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(event.request_id, "e2e-1");
    let message = tokio::time::timeout(Duration::from_secs(30), results.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.subject, "results.e2e-1");
    let result: ExecResult = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (result.exit_code, result.skipped, result.stdout.as_str()),
        (0, false, "hi\n")
    );
    assert_eq!(result.pc_id, "e2e-pc");
    let stored = log.stream_info("RESULTS").await.unwrap();
    assert_eq!(stored.messages, 1, "the result is in the RESULTS stream");
}
