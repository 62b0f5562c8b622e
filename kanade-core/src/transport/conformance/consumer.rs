//! Durable consumer checks: ack, nak, ack-wait expiry, max deliver,
//! resuming by name, late acks, re-filtering — and the cancel safety of
//! `next()` for subscriptions, consumers and key-value watches.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::log::{publish, WAIT};
use super::{ensure, fail, within, CheckResult};
use bytes::Bytes;

use crate::transport::{
    ConsumerConfig, DeliverPolicy, KvConfig, MessageLog, StreamConfig, Transport,
};

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

pub(super) async fn ack_stops_redelivery<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

pub(super) async fn nak_redelivers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

pub(super) async fn ack_wait_expiry_redelivers<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

pub(super) async fn max_deliver_stops_redelivery<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

pub(super) async fn durable_consumer_resumes_by_name<T: Transport + ?Sized>(
    t: Arc<T>,
) -> CheckResult {
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

pub(super) async fn late_ack_still_counts<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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

pub(super) async fn reopened_consumer_takes_new_filter<T: Transport + ?Sized>(
    t: Arc<T>,
) -> CheckResult {
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

/// Polls `$next` (a fresh future each try) through [`impatient`] until one
/// try completes, counting tries in `$attempt` and abandoned futures in
/// `$abandoned`; fails the check after [`WAIT`] without a message. Yields
/// between tries so the publisher runs on a current-thread runtime.
macro_rules! next_impatiently {
    ($what:expr, $next:expr, $attempt:ident, $abandoned:ident, $got:ident) => {{
        let started = tokio::time::Instant::now();
        let mut misses = 0;
        loop {
            $attempt += 1;
            if let Some(out) = impatient($next, $attempt, misses).await {
                break out;
            }
            $abandoned += 1;
            misses += 1;
            ensure!(
                started.elapsed() < WAIT,
                "{}: nothing within {WAIT:?} after {:?}",
                $what,
                $got
            );
            tokio::task::yield_now().await;
        }
    }};
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
/// ephemeral subscription, for a durable consumer (which must not count
/// it as another delivery either) and for a key-value watch.
pub(super) async fn cancelled_next_loses_nothing<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
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
            let message = next_impatiently!("subscription", sub.next(), attempt, abandoned, got);
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
            let delivery = next_impatiently!("consumer", consumer.next(), attempt, abandoned, got);
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

    // A key-value watch, while keys are written.
    let mut config = KvConfig::new("conf_cancel");
    config.history = 1;
    let kv = t.key_value(config).await.map_err(fail("open bucket"))?;
    let mut watch = kv.watch(">").await.map_err(fail("watch"))?;
    let write = async {
        for i in 0..CANCEL_MESSAGES {
            tokio::time::sleep(Duration::from_millis(1)).await;
            kv.put(&format!("k{i}"), Bytes::from(i.to_string()))
                .await
                .map_err(fail("put"))?;
        }
        Ok::<_, String>(())
    };
    let receive = async {
        let mut got = Vec::new();
        let (mut attempt, mut abandoned) = (0, 0);
        while got.len() < CANCEL_MESSAGES {
            let entry = next_impatiently!("kv watch", watch.next(), attempt, abandoned, got);
            let entry = entry.ok_or("kv watch ended")?;
            let body = String::from_utf8_lossy(&entry.value).into_owned();
            in_sequence("kv watch", &got, &body)?;
            got.push(body);
        }
        Ok::<_, String>((got, abandoned))
    };
    let (written, received) = tokio::join!(write, receive);
    written?;
    let (got, abandoned) = received?;
    check_received("kv watch", &got, abandoned)?;
    Ok(())
}
