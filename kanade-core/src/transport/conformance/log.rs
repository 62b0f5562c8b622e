//! Message log checks: wildcards, fan-out, subject and payload limits,
//! streams (idempotent create, per-subject limits, replay) and dedup.
//!
//! Durable consumers and cancel safety are in `consumer`; the suite order
//! is set in the parent module.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{ensure, fail, within, CheckResult};
use crate::transport::{
    Capabilities, ConsumerConfig, DeliverPolicy, Headers, MessageLog, StreamConfig, Subscription,
    Transport, TransportError, MESSAGE_ID_HEADER,
};

/// How long a check waits for one message.
pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) fn needs_dedup(caps: &Capabilities) -> Option<String> {
    caps.dedup_window
        .is_none()
        .then(|| "transport has no dedup window".to_owned())
}

pub(super) async fn publish(log: &dyn MessageLog, subject: &str, body: &str) -> CheckResult {
    log.publish(subject, Headers::new(), Bytes::from(body.to_owned()))
        .await
        .map(|_| ())
        .map_err(|e| format!("publish {subject}: {e}"))
}

async fn next_body(sub: &mut Subscription, what: &str) -> Result<(String, String), String> {
    let message = within(WAIT, what, sub.next())
        .await?
        .ok_or_else(|| format!("{what}: subscription ended"))?;
    Ok((
        message.subject,
        String::from_utf8_lossy(&message.payload).into_owned(),
    ))
}

pub(super) async fn wildcard_matching<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let mut one = log
        .subscribe("wc.*")
        .await
        .map_err(fail("subscribe wc.*"))?;
    let mut rest = log
        .subscribe("wc.>")
        .await
        .map_err(fail("subscribe wc.>"))?;
    let mut exact = log
        .subscribe("wc.a.b")
        .await
        .map_err(fail("subscribe wc.a.b"))?;
    let mut middle = log
        .subscribe("wc.*.b")
        .await
        .map_err(fail("subscribe wc.*.b"))?;
    for subject in ["wc.a", "wc.a.b", "other.a", "wc", "wc.x.c", "wc.end"] {
        publish(&*log, subject, subject).await?;
    }
    publish(&*log, "wc.end.b", "end").await?;
    let mut got = Vec::new();
    loop {
        let (subject, _) = next_body(&mut one, "wc.*").await?;
        if subject == "wc.end" {
            break;
        }
        got.push(subject);
    }
    ensure!(got == ["wc.a"], "wc.* received {got:?}, expected [wc.a]");
    let mut got = Vec::new();
    loop {
        let (subject, _) = next_body(&mut rest, "wc.>").await?;
        if subject == "wc.end.b" {
            break;
        }
        got.push(subject);
    }
    ensure!(
        got == ["wc.a", "wc.a.b", "wc.x.c", "wc.end"],
        "wc.> received {got:?}"
    );
    let (subject, _) = next_body(&mut exact, "wc.a.b").await?;
    ensure!(subject == "wc.a.b", "wc.a.b received {subject}");
    let (first, _) = next_body(&mut middle, "wc.*.b").await?;
    let (second, _) = next_body(&mut middle, "wc.*.b").await?;
    ensure!(
        (first.as_str(), second.as_str()) == ("wc.a.b", "wc.end.b"),
        "wc.*.b received {first}, {second}"
    );
    Ok(())
}

pub(super) async fn fan_out_to_many_subscribers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let mut subs = Vec::new();
    for _ in 0..50 {
        subs.push(log.subscribe("fan.out").await.map_err(fail("subscribe"))?);
    }
    for i in 0..10 {
        publish(&*log, "fan.out", &i.to_string()).await?;
    }
    for (n, sub) in subs.iter_mut().enumerate() {
        for i in 0..10 {
            let (_, body) = next_body(sub, "fan-out subscriber").await?;
            ensure!(
                body == i.to_string(),
                "subscriber {n} got {body} as message {i}"
            );
        }
    }
    Ok(())
}

pub(super) async fn invalid_subjects_are_rejected<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    for subject in ["", "a..b", "a.*", "a.>", "a b"] {
        let result = log.publish(subject, Headers::new(), Bytes::new()).await;
        ensure!(
            matches!(result, Err(TransportError::InvalidSubject { .. })),
            "publish to {subject:?} gave {result:?}"
        );
    }
    for pattern in ["a.>.b", "a.b*", ""] {
        let result = log.subscribe(pattern).await.map(|_| ());
        ensure!(
            matches!(result, Err(TransportError::InvalidSubject { .. })),
            "subscribe to {pattern:?} gave {result:?}"
        );
    }
    Ok(())
}

pub(super) async fn payload_too_large_is_rejected<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let limit = t.capabilities().max_payload_bytes;
    let log = t.messages();
    let big = Bytes::from(vec![b'x'; limit + 1]);
    let result = log.publish("big.one", Headers::new(), big).await;
    ensure!(
        matches!(result, Err(TransportError::PayloadTooLarge { size, .. }) if size == limit + 1),
        "oversized publish gave {result:?}"
    );
    let fits = Bytes::from(vec![b'x'; limit.min(64 * 1024)]);
    log.publish("big.one", Headers::new(), fits)
        .await
        .map_err(fail("publish within the limit"))?;
    Ok(())
}

pub(super) async fn stream_create_is_idempotent<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let config = StreamConfig::new("IDEM", &["idem.>"]);
    log.create_stream(config.clone())
        .await
        .map_err(fail("create"))?;
    publish(&*log, "idem.a", "1").await?;
    let again = log
        .create_stream(config)
        .await
        .map_err(fail("create again"))?;
    ensure!(again.messages == 1, "re-creating lost messages: {again:?}");
    let clash = log
        .create_stream(StreamConfig::new("CLASH", &["idem.a"]))
        .await;
    ensure!(clash.is_err(), "an overlapping stream was accepted");
    let missing = log.stream_info("NO_SUCH_STREAM").await;
    ensure!(
        matches!(missing, Err(TransportError::NotFound { .. })),
        "info of a missing stream gave {missing:?}"
    );
    Ok(())
}

pub(super) async fn stream_keeps_last_per_subject<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let mut config = StreamConfig::new("KEEP", &["keep.>"]);
    config.max_msgs_per_subject = Some(1);
    log.create_stream(config).await.map_err(fail("create"))?;
    for (subject, body) in [
        ("keep.a", "1"),
        ("keep.a", "2"),
        ("keep.b", "1"),
        ("keep.a", "3"),
    ] {
        let ack = log
            .publish(subject, Headers::new(), Bytes::from(body))
            .await
            .map_err(fail("publish"))?;
        ensure!(ack.is_some(), "a stream publish returned no ack");
    }
    let info = log.stream_info("KEEP").await.map_err(fail("info"))?;
    ensure!(
        info.messages == 2,
        "kept {} messages, expected 2",
        info.messages
    );
    ensure!(
        info.last_sequence == 4,
        "last sequence {}",
        info.last_sequence
    );
    Ok(())
}

pub(super) async fn late_consumer_replays_last_per_subject<T: Transport + ?Sized>(
    t: Arc<T>,
) -> CheckResult {
    let log = t.messages();
    log.create_stream(StreamConfig::new("REPLAY", &["replay.>"]))
        .await
        .map_err(fail("create"))?;
    for (subject, body) in [
        ("replay.all", "old"),
        ("replay.pc.a", "a1"),
        ("replay.all", "new"),
        ("replay.pc.b", "b1"),
        ("replay.pc.a", "a2"),
    ] {
        publish(&*log, subject, body).await?;
    }
    let mut config = ConsumerConfig::new("late", DeliverPolicy::LastPerSubject);
    config.filter_subjects = vec!["replay.all".into(), "replay.pc.a".into()];
    let consumer = log
        .create_consumer("REPLAY", config)
        .await
        .map_err(fail("consumer"))?;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = within(WAIT, "replay", consumer.next())
            .await?
            .map_err(fail("next"))?;
        d.ack().await.map_err(fail("ack"))?;
        got.push(String::from_utf8_lossy(&d.message.payload).into_owned());
    }
    ensure!(got == ["new", "a2"], "replayed {got:?}, expected [new, a2]");
    publish(&*log, "replay.pc.b", "b2").await?;
    publish(&*log, "replay.pc.a", "a3").await?;
    let d = within(WAIT, "live", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"a3",
        "live delivery {:?}",
        d.message.payload
    );
    Ok(())
}

pub(super) async fn dedup_window_drops_duplicates<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let mut config = StreamConfig::new("DEDUP", &["dedup.>"]);
    config.duplicate_window = Some(Duration::from_secs(60));
    log.create_stream(config).await.map_err(fail("create"))?;
    let headers = Headers::from([(MESSAGE_ID_HEADER.to_owned(), "result-1".to_owned())]);
    let first = log
        .publish("dedup.a", headers.clone(), Bytes::from("x"))
        .await
        .map_err(fail("publish"))?
        .ok_or("no ack")?;
    let second = log
        .publish("dedup.a", headers, Bytes::from("x"))
        .await
        .map_err(fail("publish again"))?
        .ok_or("no ack")?;
    ensure!(
        !first.duplicate && second.duplicate,
        "acks {first:?} {second:?}"
    );
    ensure!(
        first.sequence == second.sequence,
        "acks {first:?} {second:?}"
    );
    let info = log.stream_info("DEDUP").await.map_err(fail("info"))?;
    ensure!(info.messages == 1, "stored {} messages", info.messages);
    Ok(())
}
