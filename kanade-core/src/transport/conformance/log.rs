//! Message log checks: wildcards, fan-out, streams, consumers, dedup,
//! limits, cancel safety.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{always, check, ensure, fail, within, Check, CheckResult};
use crate::transport::{
    Capabilities, ConsumerConfig, DeliverPolicy, Headers, MessageLog, StreamConfig, Subscription,
    Transport, TransportError, MESSAGE_ID_HEADER,
};

const WAIT: Duration = Duration::from_secs(5);

pub(super) fn checks<T: Transport + ?Sized + 'static>() -> Vec<Check<T>> {
    vec![
        check!(wildcard_matching, always),
        check!(fan_out_to_many_subscribers, always),
        check!(invalid_subjects_are_rejected, always),
        check!(payload_too_large_is_rejected, always),
        check!(stream_create_is_idempotent, always),
        check!(stream_keeps_last_per_subject, always),
        check!(late_consumer_replays_last_per_subject, always),
        check!(ack_stops_redelivery, always),
        check!(nak_redelivers, always),
        check!(ack_wait_expiry_redelivers, always),
        check!(max_deliver_stops_redelivery, always),
        check!(durable_consumer_resumes_by_name, always),
        check!(late_ack_still_counts, always),
        check!(reopened_consumer_takes_new_filter, always),
        check!(dedup_window_drops_duplicates, needs_dedup),
        check!(cancelled_next_loses_nothing, always),
    ]
}

fn needs_dedup(caps: &Capabilities) -> Option<String> {
    caps.dedup_window
        .is_none()
        .then(|| "transport has no dedup window".to_owned())
}

async fn publish(log: &dyn MessageLog, subject: &str, body: &str) -> CheckResult {
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

async fn wildcard_matching<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn fan_out_to_many_subscribers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn invalid_subjects_are_rejected<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn payload_too_large_is_rejected<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn stream_create_is_idempotent<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn stream_keeps_last_per_subject<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn late_consumer_replays_last_per_subject<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn consumer_with(
    log: &dyn MessageLog,
    stream: &str,
    ack_wait: Duration,
    max_deliver: Option<u32>,
) -> Result<Arc<dyn crate::transport::Consumer>, String> {
    log.create_stream(StreamConfig::new(
        stream,
        &[&format!("{}.>", stream.to_lowercase())],
    ))
    .await
    .map_err(fail("create stream"))?;
    let mut config = ConsumerConfig::new("worker", DeliverPolicy::All);
    config.ack_wait = ack_wait;
    config.max_deliver = max_deliver;
    log.create_consumer(stream, config)
        .await
        .map_err(fail("create consumer"))
}

async fn ack_stops_redelivery<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "ACKED", Duration::from_millis(500), None).await?;
    publish(&*log, "acked.1", "first").await?;
    let d = within(WAIT, "first", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(d.delivered == 1, "first delivery counted {}", d.delivered);
    d.ack().await.map_err(fail("ack"))?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&*log, "acked.2", "second").await?;
    let d = within(WAIT, "second", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"second",
        "an acked message came back: {:?}",
        d.message.payload
    );
    Ok(())
}

async fn nak_redelivers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "NAKED", Duration::from_secs(30), None).await?;
    publish(&*log, "naked.1", "x").await?;
    let d = within(WAIT, "first", consumer.next())
        .await?
        .map_err(fail("next"))?;
    d.nak(None).await.map_err(fail("nak"))?;
    let again = within(WAIT, "after nak", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        again.stream_sequence == d.stream_sequence && again.delivered == 2,
        "after nak got seq {} delivery {}",
        again.stream_sequence,
        again.delivered
    );
    let started = tokio::time::Instant::now();
    again
        .nak(Some(Duration::from_millis(400)))
        .await
        .map_err(fail("nak with delay"))?;
    let third = within(WAIT, "after delayed nak", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        third.delivered == 3,
        "third delivery counted {}",
        third.delivered
    );
    ensure!(
        started.elapsed() >= Duration::from_millis(350),
        "delayed nak came back after {:?}",
        started.elapsed()
    );
    third.ack().await.map_err(fail("ack"))?;
    Ok(())
}

async fn ack_wait_expiry_redelivers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "EXPIRY", Duration::from_millis(500), None).await?;
    publish(&*log, "expiry.1", "x").await?;
    let d = within(WAIT, "first", consumer.next())
        .await?
        .map_err(fail("next"))?;
    let started = tokio::time::Instant::now();
    let again = within(WAIT, "redelivery", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        again.stream_sequence == d.stream_sequence && again.delivered == 2,
        "expected a redelivery, got seq {} delivery {}",
        again.stream_sequence,
        again.delivered
    );
    ensure!(
        started.elapsed() >= Duration::from_millis(400),
        "redelivered after only {:?}",
        started.elapsed()
    );
    again.ack().await.map_err(fail("ack"))?;
    Ok(())
}

async fn max_deliver_stops_redelivery<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "MAXDEL", Duration::from_millis(300), Some(2)).await?;
    publish(&*log, "maxdel.1", "poison").await?;
    for n in 1..=2 {
        let d = within(WAIT, "poison", consumer.next())
            .await?
            .map_err(fail("next"))?;
        ensure!(d.delivered == n, "delivery {n} counted {}", d.delivered);
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    publish(&*log, "maxdel.2", "healthy").await?;
    let d = within(WAIT, "healthy", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"healthy",
        "delivered {:?} a third time",
        d.message.payload
    );
    Ok(())
}

async fn durable_consumer_resumes_by_name<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "RESUME", Duration::from_secs(30), None).await?;
    publish(&*log, "resume.1", "one").await?;
    publish(&*log, "resume.2", "two").await?;
    let d = within(WAIT, "first", consumer.next())
        .await?
        .map_err(fail("next"))?;
    d.ack().await.map_err(fail("ack"))?;
    drop(consumer);
    let reopened = consumer_with(&*log, "RESUME", Duration::from_secs(30), None).await?;
    let d = within(WAIT, "after reopen", reopened.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"two",
        "reopened consumer delivered {:?}",
        d.message.payload
    );
    Ok(())
}

async fn dedup_window_drops_duplicates<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

async fn late_ack_still_counts<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    let consumer = consumer_with(&*log, "LATE", Duration::from_millis(300), None).await?;
    publish(&*log, "late.1", "slow").await?;
    let first = within(WAIT, "first", consumer.next())
        .await?
        .map_err(fail("next"))?;
    let second = within(WAIT, "redelivery", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        second.delivered == 2,
        "expected a redelivery, got delivery {}",
        second.delivered
    );
    first.ack().await.map_err(fail("late ack"))?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    publish(&*log, "late.2", "next").await?;
    let d = within(WAIT, "after late ack", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"next",
        "a late-acked message came back: {:?} (delivery {})",
        d.message.payload,
        d.delivered
    );
    Ok(())
}

async fn reopened_consumer_takes_new_filter<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();
    log.create_stream(StreamConfig::new("REFILTER", &["refilter.>"]))
        .await
        .map_err(fail("create stream"))?;
    let mut config = ConsumerConfig::new("agent", DeliverPolicy::New);
    config.filter_subjects = vec!["refilter.group.a".into()];
    let consumer = log
        .create_consumer("REFILTER", config.clone())
        .await
        .map_err(fail("create consumer"))?;
    publish(&*log, "refilter.group.a", "a1").await?;
    let d = within(WAIT, "a1", consumer.next())
        .await?
        .map_err(fail("next"))?;
    d.ack().await.map_err(fail("ack"))?;
    drop(consumer);
    config.filter_subjects = vec!["refilter.group.b".into()];
    let consumer = log
        .create_consumer("REFILTER", config)
        .await
        .map_err(fail("re-open consumer"))?;
    publish(&*log, "refilter.group.a", "a2").await?;
    publish(&*log, "refilter.group.b", "b1").await?;
    let d = within(WAIT, "b1", consumer.next())
        .await?
        .map_err(fail("next"))?;
    ensure!(
        &d.message.payload[..] == b"b1",
        "re-opened consumer kept its old filter: got {:?}",
        d.message.payload
    );
    Ok(())
}

/// Messages published in each half of [`cancelled_next_loses_nothing`].
const CANCEL_MESSAGES: usize = 20;

/// One receive attempt built to be abandoned: on even attempts `next` is
/// raced (`biased`) against an already-ready branch, so it is polled once
/// and dropped if not immediately ready; on odd ones it gets a short
/// timeout, growing with `misses` so a slow transport still gets through.
/// `None`: the attempt was abandoned and its `next()` future dropped.
async fn impatient<F: Future>(next: F, attempt: usize, misses: usize) -> Option<F::Output> {
    if attempt.is_multiple_of(2) {
        tokio::select! {
            biased;
            out = next => Some(out),
            () = std::future::ready(()) => None,
        }
    } else {
        let patience = Duration::from_millis(1 + (misses / 10) as u64);
        tokio::time::timeout(patience, next).await.ok()
    }
}

/// Publishes `0..count` to `subject`, 1 ms apart.
async fn publish_slowly(log: &dyn MessageLog, subject: &str, count: usize) -> CheckResult {
    for i in 0..count {
        tokio::time::sleep(Duration::from_millis(1)).await;
        publish(log, subject, &i.to_string()).await?;
    }
    Ok(())
}

/// Fails unless `body` is the next message after `got` (`0`, `1`, …).
fn in_sequence(what: &str, got: &[String], body: &str) -> CheckResult {
    ensure!(
        body == got.len().to_string(),
        "{what}: received {body} after {got:?}: a dropped next() lost or repeated a message"
    );
    Ok(())
}

/// Checks that the bodies received are `0..CANCEL_MESSAGES` once each, in
/// order, and that abandoned attempts really happened.
fn check_received(what: &str, got: &[String], abandoned: usize) -> CheckResult {
    let expected: Vec<String> = (0..CANCEL_MESSAGES).map(|i| i.to_string()).collect();
    ensure!(
        got == expected,
        "{what}: with next() futures dropped, received {got:?}, expected 0..{CANCEL_MESSAGES} once each in order"
    );
    ensure!(
        abandoned > 0,
        "{what}: no next() future was dropped, the check proved nothing"
    );
    Ok(())
}

/// `next()` is cancel-safe: dropping its future mid-wait (a losing
/// `select!` branch, an expired timeout) loses no message, for an
/// ephemeral subscription and for a durable consumer (which must not count
/// it as another delivery either).
async fn cancelled_next_loses_nothing<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let log = t.messages();

    // An ephemeral subscription, receiving while messages trickle in.
    let mut sub = log
        .subscribe("cancel.plain.*")
        .await
        .map_err(fail("subscribe"))?;
    let receive = async {
        let mut got = Vec::new();
        let (mut attempt, mut abandoned) = (0, 0);
        while got.len() < CANCEL_MESSAGES {
            let started = tokio::time::Instant::now();
            let mut misses = 0;
            let message = loop {
                attempt += 1;
                if let Some(message) = impatient(sub.next(), attempt, misses).await {
                    break message;
                }
                abandoned += 1;
                misses += 1;
                ensure!(
                    started.elapsed() < WAIT,
                    "subscription: nothing within {WAIT:?} after {got:?}"
                );
                // Let the publisher run (a current-thread runtime).
                tokio::task::yield_now().await;
            };
            let message = message.ok_or("subscription ended")?;
            let body = String::from_utf8_lossy(&message.payload).into_owned();
            in_sequence("subscription", &got, &body)?;
            got.push(body);
        }
        Ok::<_, String>((got, abandoned))
    };
    let (published, received) = tokio::join!(
        publish_slowly(&*log, "cancel.plain.m", CANCEL_MESSAGES),
        receive
    );
    published?;
    let (got, abandoned) = received?;
    check_received("subscription", &got, abandoned)?;
    let extra = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
    ensure!(
        !matches!(extra, Ok(Some(_))),
        "subscription: an extra message arrived after all {CANCEL_MESSAGES}: {extra:?}"
    );
    drop(sub);

    // A durable consumer (ack wait far longer than the check: a delivery
    // lost to a dropped next() would only come back as a redelivery).
    log.create_stream(StreamConfig::new("CANCEL", &["cancel.durable.>"]))
        .await
        .map_err(fail("create stream"))?;
    let consumer = log
        .create_consumer("CANCEL", ConsumerConfig::new("patient", DeliverPolicy::All))
        .await
        .map_err(fail("create consumer"))?;
    let receive = async {
        let mut got = Vec::new();
        let (mut attempt, mut abandoned) = (0, 0);
        while got.len() < CANCEL_MESSAGES {
            let started = tokio::time::Instant::now();
            let mut misses = 0;
            let delivery = loop {
                attempt += 1;
                if let Some(delivery) = impatient(consumer.next(), attempt, misses).await {
                    break delivery;
                }
                abandoned += 1;
                misses += 1;
                ensure!(
                    started.elapsed() < WAIT,
                    "consumer: nothing within {WAIT:?} after {got:?}"
                );
                tokio::task::yield_now().await;
            };
            let delivery = delivery.map_err(fail("consumer next"))?;
            let body = String::from_utf8_lossy(&delivery.message.payload).into_owned();
            in_sequence("consumer", &got, &body)?;
            ensure!(
                delivery.delivered == 1,
                "consumer: message {body} came as delivery {} (a dropped next() lost it)",
                delivery.delivered
            );
            delivery.ack().await.map_err(fail("ack"))?;
            got.push(body);
        }
        Ok::<_, String>((got, abandoned))
    };
    let (published, received) = tokio::join!(
        publish_slowly(&*log, "cancel.durable.m", CANCEL_MESSAGES),
        receive
    );
    published?;
    let (got, abandoned) = received?;
    check_received("consumer", &got, abandoned)?;
    let extra = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
    ensure!(
        extra.is_err(),
        "consumer: an extra delivery after all {CANCEL_MESSAGES}: {extra:?}"
    );
    Ok(())
}
