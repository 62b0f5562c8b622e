//! The NATS transport against a real `nats-server` (started per test on a
//! free loopback port; the test fails with an install hint if the binary is
//! missing).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_core::transport::conformance;
use kanade_core::transport::*;
use kanade_transport_nats::provision::provision;
use kanade_transport_nats::test_server::NatsServer;
use kanade_transport_nats::{ConnectionState, NatsOptions, NatsTransport};

async fn connect(server: &NatsServer) -> NatsTransport {
    let mut options = NatsOptions::new(server.url());
    options.name = Some("kanade-tests".into());
    options.request_timeout = Duration::from_secs(3);
    options.max_reconnect_delay = Duration::from_millis(250);
    NatsTransport::connect(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_against_a_real_server() {
    let server = NatsServer::start();
    let report = conformance::run_all(|| connect_arc(&server)).await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped(), 0, "{report}");
}

async fn connect_arc(server: &NatsServer) -> Arc<NatsTransport> {
    Arc::new(connect(server).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_come_from_the_server() {
    let server = NatsServer::start();
    let transport = connect(&server).await;
    let caps = transport.capabilities();
    assert_eq!(caps.name, "nats");
    assert!(caps.durable && caps.cross_process);
    assert_eq!(
        caps.max_payload_bytes,
        transport.client().server_info().max_payload
    );
    assert_eq!(
        *transport.connection_state().borrow(),
        ConnectionState::Connected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_twice_changes_nothing() {
    let server = NatsServer::start();
    let transport = connect(&server).await;
    let first = provision(&transport).await.unwrap();
    // Streams, the reference's buckets, exec_kills and agent_schedules, object stores.
    assert_eq!(first.created.len(), 6 + 9 + 2 + 4, "{first:?}");
    assert!(
        first.updated.is_empty() && first.unchanged.is_empty(),
        "{first:?}"
    );
    let second = provision(&transport).await.unwrap();
    assert!(
        second.created.is_empty() && second.updated.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.unchanged.len(), 21, "{second:?}");
    // Kills are remembered as long as agents remember request ids.
    let kills = transport
        .messages()
        .stream_info("KV_exec_kills")
        .await
        .unwrap();
    assert_eq!(
        kills.config.max_age,
        Some(Duration::from_secs(8 * 24 * 3600))
    );
    let exec = transport.messages().stream_info("EXEC").await.unwrap();
    assert_eq!(exec.config.max_msgs_per_subject, Some(1));
    assert_eq!(exec.config.max_bytes, Some(64 * 1024 * 1024));
    assert_eq!(
        exec.config.max_age,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
}

/// A server whose storage limit cannot hold what kanade's streams reserve
/// (the CI machine's default, 75% of a nearly full disk, did this): the
/// refusal is a configuration error naming `max_file_store` and the size
/// needed, and once the limit is raised provisioning goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_too_small_for_the_streams_is_named_with_its_setting() {
    for limit in ["1G", "3G"] {
        let small = NatsServer::start_with_store_limit(limit);
        let transport = connect(&small).await;
        let error = provision(&transport).await.unwrap_err();
        let TransportError::InvalidConfig(text) = &error else {
            panic!("{limit}: expected a configuration error, got {error:?}");
        };
        assert!(
            text.contains("max_file_store") && text.contains("4416 MiB"),
            "{limit}: {text}"
        );
    }
    assert_eq!(
        kanade_core::names::RESERVED_STREAM_BYTES,
        kanade_core::names::ALL_STREAMS
            .iter()
            .map(|s| s.max_bytes)
            .sum::<u64>()
    );
    let roomy = NatsServer::start_with_store_limit("5G");
    let transport = connect(&roomy).await;
    provision(&transport).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_updates_drifted_settings_and_names_what_it_cannot() {
    let server = NatsServer::start();
    let transport = connect(&server).await;
    let js = async_nats::jetstream::new(transport.client().clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["results.>".into()],
        max_bytes: 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let report = provision(&transport).await.unwrap();
    assert!(
        report
            .updated
            .iter()
            .any(|u| u.starts_with("stream RESULTS") && u.contains("max_bytes")),
        "{report:?}"
    );
    let results = transport.messages().stream_info("RESULTS").await.unwrap();
    assert_eq!(results.config.max_bytes, Some(2048 * 1024 * 1024));

    js.delete_stream("AUDIT").await.unwrap();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "AUDIT".into(),
        subjects: vec!["audit.>".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = provision(&transport).await.unwrap_err().to_string();
    assert!(
        err.contains("stream AUDIT") && err.contains("storage"),
        "{err}"
    );
}

/// A consumer waiting in `next()` when its server restarts asks again as
/// soon as the client is back: its pull request died with the server, and
/// waiting for that request's expiry (5 s, then 2 s of grace) left an
/// agent's EXEC replay deaf for up to 7 s after a cluster member restarted
/// — long enough for a 5 s schedule's next command to supersede the one it
/// missed. The message published after the reconnect arrives before the
/// old request would have expired; the old code could not deliver it
/// sooner than 7 s after the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_asks_again_as_soon_as_the_client_reconnects() {
    let mut server = NatsServer::start();
    let transport = connect(&server).await;
    let log = transport.messages();
    log.create_stream(StreamConfig::new("WAITING", &["waiting.>"]))
        .await
        .unwrap();
    let consumer = log
        .create_consumer("WAITING", ConsumerConfig::new("waiter", DeliverPolicy::All))
        .await
        .unwrap();
    let requested = std::time::Instant::now();
    let waiting = tokio::spawn(async move {
        let delivery = consumer.next().await.unwrap();
        delivery.ack().await.unwrap();
        (delivery.message.payload, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut state = transport.connection_state();
    server.kill();
    state
        .wait_for(|s| *s == ConnectionState::Disconnected)
        .await
        .unwrap();
    server.restart().unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("the client reconnects")
    .unwrap();
    log.publish("waiting.one", Headers::new(), Bytes::from("after"))
        .await
        .unwrap()
        .unwrap();
    let (payload, arrived) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting consumer gets the message")
        .unwrap();
    assert_eq!(payload, Bytes::from("after"));
    let waited = arrived - requested;
    assert!(
        waited < Duration::from_secs(5),
        "delivered {waited:?} after the first request: the consumer waited for the dead request to expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_data_survives_a_server_kill_and_the_client_reconnects() {
    let mut server = NatsServer::start();
    let transport = connect(&server).await;
    let log = transport.messages();
    log.create_stream(StreamConfig::new("DURABLE", &["durable.>"]))
        .await
        .unwrap();
    let kv = transport
        .key_value(KvConfig::new("durable_kv"))
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        let ack = log
            .publish(
                &format!("durable.m{i}"),
                Headers::new(),
                Bytes::from(format!("m{i}")),
            )
            .await
            .unwrap()
            .unwrap();
        acked.push(ack.sequence);
        kv.put(&format!("k{i}"), Bytes::from(format!("v{i}")))
            .await
            .unwrap();
    }

    let mut state = transport.connection_state();
    server.kill();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == ConnectionState::Disconnected),
    )
    .await
    .expect("the client notices the server is gone")
    .unwrap();
    let started = std::time::Instant::now();
    let down = log
        .publish("durable.down", Headers::new(), Bytes::from("x"))
        .await;
    assert!(down.is_err(), "publish while the server is down: {down:?}");
    assert!(down.unwrap_err().is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a publish while down must not hang"
    );

    server.restart().unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("the client reconnects")
    .unwrap();
    let info = log.stream_info("DURABLE").await.unwrap();
    assert_eq!(info.messages, 50, "{info:?}");
    let consumer = log
        .create_consumer("DURABLE", ConsumerConfig::new("check", DeliverPolicy::All))
        .await
        .unwrap();
    for (i, seq) in acked.iter().enumerate() {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.stream_sequence, d.message.payload.clone()),
            (*seq, Bytes::from(format!("m{i}")))
        );
        d.ack().await.unwrap();
    }
    for i in 0..50 {
        let value = kv.get(&format!("k{i}")).await.unwrap().unwrap().value;
        assert_eq!(value, Bytes::from(format!("v{i}")));
    }
    log.publish("durable.after", Headers::new(), Bytes::from("y"))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_fail_fast() {
    let server = NatsServer::start();
    let transport = connect(&server).await;
    let limit = transport.capabilities().max_payload_bytes;
    let started = std::time::Instant::now();
    let result = transport
        .messages()
        .publish("big.one", Headers::new(), Bytes::from(vec![0u8; limit + 1]))
        .await;
    assert!(
        matches!(result, Err(TransportError::PayloadTooLarge { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let kv = transport.key_value(KvConfig::new("big_kv")).await.unwrap();
    let result = kv.put("big", Bytes::from(vec![0u8; limit + 1])).await;
    assert!(
        matches!(result, Err(TransportError::PayloadTooLarge { .. })),
        "{result:?}"
    );
}
