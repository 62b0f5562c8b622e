//! The memory transport passes the conformance suite, directly and through
//! `Arc<dyn Transport>`, and behaves deterministically under paused time.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_core::names::ALL_STREAMS;
use kanade_core::transport::conformance::{self, Outcome};
use kanade_core::transport::memory::{MemorySettings, MemoryTransport};
use kanade_core::transport::*;

#[tokio::test(start_paused = true)]
async fn conformance_direct() {
    let report = conformance::run_all(|| async { Arc::new(MemoryTransport::new()) }).await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped(), 0, "memory supports everything:\n{report}");
    assert!(report.passed() >= 24, "{report}");
}

#[tokio::test(start_paused = true)]
async fn conformance_through_dyn() {
    let report =
        conformance::run_all(|| async { Arc::new(MemoryTransport::new()) as Arc<dyn Transport> })
            .await;
    report.assert_passed();
}

#[tokio::test(start_paused = true)]
async fn skips_follow_capabilities() {
    /// A memory transport that claims no dedup and no TTL.
    struct Limited(MemoryTransport);
    #[async_trait::async_trait]
    impl Transport for Limited {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                dedup_window: None,
                kv_ttl: false,
                ..self.0.capabilities()
            }
        }
        fn messages(&self) -> Arc<dyn MessageLog> {
            self.0.messages()
        }
        async fn key_value(&self, c: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
            self.0.key_value(c).await
        }
        async fn object_store(
            &self,
            c: ObjectStoreConfig,
        ) -> TransportResult<Arc<dyn ObjectStore>> {
            self.0.object_store(c).await
        }
    }
    let report = conformance::run_selected(
        || async { Arc::new(Limited(MemoryTransport::new())) },
        |name| name.starts_with("dedup") || name.contains("ttl") || name == "kv_cas_mismatch",
    )
    .await;
    let outcomes: Vec<_> = report
        .results
        .iter()
        .map(|(n, o)| (*n, o.clone()))
        .collect();
    assert_eq!(outcomes.len(), 3, "{report}");
    for (name, outcome) in outcomes {
        match name {
            "kv_cas_mismatch" => assert_eq!(outcome, Outcome::Passed),
            _ => assert!(
                matches!(outcome, Outcome::Skipped(_)),
                "{name}: {outcome:?}"
            ),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn kanade_streams_provision_idempotently() {
    let transport = MemoryTransport::new();
    let log = transport.messages();
    for _ in 0..2 {
        for spec in &ALL_STREAMS {
            log.create_stream(StreamConfig::from_spec(spec))
                .await
                .unwrap();
        }
    }
    let ack = log
        .publish("commands.all", Headers::new(), Bytes::from("{}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ack.stream.as_str(), ack.sequence), ("EXEC", 1));
    let none = log
        .publish("heartbeat.pc-1", Headers::new(), Bytes::from("{}"))
        .await
        .unwrap();
    assert_eq!(none, None, "heartbeats are not captured by any stream");
}

#[tokio::test(start_paused = true)]
async fn a_publish_goes_to_the_stream_of_its_subject_as_streams_change() {
    let log = MemoryTransport::new().messages();
    let stream_of = |subject: &'static str| {
        let log = log.clone();
        async move {
            log.publish(subject, Headers::new(), Bytes::from("{}"))
                .await
                .unwrap()
                .map(|ack| ack.stream)
        }
    };
    log.create_stream(StreamConfig::new("A", &["a.>", "x.*.a"]))
        .await
        .unwrap();
    log.create_stream(StreamConfig::new("B", &["b"]))
        .await
        .unwrap();
    assert_eq!(stream_of("a.1.2").await.as_deref(), Some("A"));
    assert_eq!(stream_of("x.1.a").await.as_deref(), Some("A"));
    assert_eq!(stream_of("b").await.as_deref(), Some("B"));
    assert_eq!(stream_of("a").await, None, "`a.>` needs a token after `a`");
    assert_eq!(stream_of("b.1").await, None);
    // Redefining a stream moves its subjects.
    log.create_stream(StreamConfig::new("A", &["c.*"]))
        .await
        .unwrap();
    assert_eq!(stream_of("a.1.2").await, None, "no longer captured");
    assert_eq!(stream_of("c.1").await.as_deref(), Some("A"));
    assert_eq!(stream_of("b").await.as_deref(), Some("B"));
    // A subject now free can go to another stream.
    log.create_stream(StreamConfig::new("C", &["a.>"]))
        .await
        .unwrap();
    assert_eq!(stream_of("a.9").await.as_deref(), Some("C"));
}

#[tokio::test(start_paused = true)]
async fn stream_limits_max_age_and_max_bytes() {
    let log = MemoryTransport::new().messages();
    let mut config = StreamConfig::new("AGED", &["aged.>"]);
    config.max_age = Some(Duration::from_secs(10));
    config.max_bytes = Some(100);
    log.create_stream(config).await.unwrap();
    for i in 0..5 {
        // 6-byte subject + 14-byte payload = 20 bytes each.
        log.publish(
            "aged.a",
            Headers::new(),
            Bytes::from(format!("payload-{i:06}")),
        )
        .await
        .unwrap();
    }
    assert_eq!(log.stream_info("AGED").await.unwrap().bytes, 100);
    log.publish("aged.b", Headers::new(), Bytes::from("payload-000005"))
        .await
        .unwrap();
    let info = log.stream_info("AGED").await.unwrap();
    assert_eq!(
        (info.messages, info.first_sequence),
        (5, 2),
        "oldest discarded"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        log.stream_info("AGED").await.unwrap().messages,
        0,
        "aged out"
    );
}

/// Runs a scripted scenario and records what a consumer saw and when.
async fn trace() -> Vec<(u64, u32, u128)> {
    let settings = MemorySettings {
        start_time: chrono::DateTime::UNIX_EPOCH,
        ..MemorySettings::default()
    };
    let log = MemoryTransport::with_settings(settings).messages();
    log.create_stream(StreamConfig::new("DET", &["det.>"]))
        .await
        .unwrap();
    let mut config = ConsumerConfig::new("c", DeliverPolicy::All);
    config.ack_wait = Duration::from_millis(250);
    config.max_deliver = Some(3);
    let consumer = log.create_consumer("DET", config).await.unwrap();
    let start = tokio::time::Instant::now();
    let publisher = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..6 {
                tokio::time::sleep(Duration::from_millis(70 * i)).await;
                log.publish(&format!("det.{i}"), Headers::new(), Bytes::new())
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        seen.push((d.stream_sequence, d.delivered, start.elapsed().as_millis()));
        if d.stream_sequence % 2 == 0 {
            d.ack().await.unwrap();
        }
    }
    publisher.await.unwrap();
    seen
}

#[test]
fn identical_runs_under_paused_time_are_identical() {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(trace())
    };
    let first = run();
    assert!(first.len() > 6, "expected redeliveries: {first:?}");
    assert!(first.iter().any(|(_, delivered, _)| *delivered == 3));
    assert_eq!(first, run());
}
