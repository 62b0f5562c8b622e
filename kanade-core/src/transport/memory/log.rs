//! The memory message log: plain subscriptions and streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::consumer::MemoryConsumer;
use super::lock;
use super::stream::StreamShared;
use crate::transport::messages::ChannelSubscription;
use crate::transport::subject::{overlaps, validate_pattern, validate_subject};
use crate::transport::subject_index::SubjectIndex;
use crate::transport::{
    ArrivalGate, Consumer, ConsumerConfig, Headers, Message, MessageLog, PublishAck, StreamConfig,
    StreamInfo, Subscription, TransportError, TransportResult,
};

pub(super) struct MemoryLog {
    max_payload_bytes: usize,
    state: Mutex<LogState>,
}

struct LogState {
    subscribers: SubjectIndex<Subscriber>,
    streams: BTreeMap<String, Arc<StreamShared>>,
    /// Each stream under its subjects, rebuilt when a stream is created
    /// or changed: a publish finds the one stream capturing its subject
    /// (stream subjects never overlap) without matching every pattern.
    stream_routes: SubjectIndex<Arc<StreamShared>>,
}

impl MemoryLog {
    pub(super) fn new(max_payload_bytes: usize) -> Self {
        Self {
            max_payload_bytes,
            state: Mutex::new(LogState {
                subscribers: SubjectIndex::default(),
                streams: BTreeMap::new(),
                stream_routes: SubjectIndex::default(),
            }),
        }
    }

    fn subscribe_gated(
        &self,
        pattern: &str,
        admit: Option<ArrivalGate>,
    ) -> TransportResult<Subscription> {
        validate_pattern(pattern)?;
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).subscribers.insert_pruning(
            pattern,
            Subscriber { tx, admit },
            Subscriber::is_gone,
        );
        Ok(Box::new(ChannelSubscription(rx)))
    }

    fn stream(&self, name: &str) -> TransportResult<Arc<StreamShared>> {
        lock(&self.state)
            .streams
            .get(name)
            .cloned()
            .ok_or_else(|| TransportError::not_found(format!("stream {name}")))
    }
}

/// Every stream under each of its subjects.
fn routes(streams: &BTreeMap<String, Arc<StreamShared>>) -> SubjectIndex<Arc<StreamShared>> {
    let mut routes = SubjectIndex::default();
    for stream in streams.values() {
        for subject in &lock(&stream.state).config.subjects {
            routes.insert(subject, stream.clone());
        }
    }
    routes
}

/// A subscription's sending end, with the gate its messages pass at
/// delivery (see [`MessageLog::subscribe_admitting`]).
struct Subscriber {
    tx: mpsc::UnboundedSender<Message>,
    admit: Option<ArrivalGate>,
}

impl Subscriber {
    /// Hands `message` over unless the gate loses it; `false` once the
    /// subscription is gone.
    fn deliver(&self, message: &Message) -> bool {
        match &self.admit {
            Some(admit) if !admit() => !self.tx.is_closed(),
            _ => self.tx.send(message.clone()).is_ok(),
        }
    }

    fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }
}

#[async_trait]
impl MessageLog for MemoryLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>> {
        validate_subject(subject)?;
        if payload.len() > self.max_payload_bytes {
            return Err(TransportError::PayloadTooLarge {
                size: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        let message = Message {
            subject: subject.to_owned(),
            headers: headers.into(),
            payload,
        };
        let mut state = lock(&self.state);
        let stream = state.stream_routes.first_match(subject).cloned();
        let ack = match &stream {
            Some(stream) => {
                let ack = lock(&stream.state).append(message.clone(), Instant::now());
                stream.changed.notify_waiters();
                if ack.duplicate {
                    return Ok(Some(ack));
                }
                Some(ack)
            }
            None => None,
        };
        state
            .subscribers
            .dispatch(subject, |subscriber| subscriber.deliver(&message));
        Ok(ack)
    }

    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription> {
        self.subscribe_gated(pattern, None)
    }

    /// Asks `admit` under the publish, as each message is delivered: no
    /// forwarding task.
    async fn subscribe_admitting(
        &self,
        pattern: &str,
        admit: ArrivalGate,
    ) -> TransportResult<Subscription> {
        self.subscribe_gated(pattern, Some(admit))
    }

    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo> {
        config.validate()?;
        let mut state = lock(&self.state);
        for (name, other) in &state.streams {
            if *name == config.name {
                continue;
            }
            let other = lock(&other.state);
            if let Some((a, b)) = config
                .subjects
                .iter()
                .flat_map(|a| other.config.subjects.iter().map(move |b| (a, b)))
                .find(|(a, b)| overlaps(a, b))
            {
                return Err(TransportError::InvalidConfig(format!(
                    "stream {} subject {a:?} overlaps stream {name} subject {b:?}",
                    config.name
                )));
            }
        }
        let stream = state
            .streams
            .entry(config.name.clone())
            .or_insert_with(|| StreamShared::new(config.clone()))
            .clone();
        let info = {
            let mut stream_state = lock(&stream.state);
            stream_state.config = config;
            stream_state.expire(Instant::now());
            stream_state.info()
        };
        state.stream_routes = routes(&state.streams);
        Ok(info)
    }

    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo> {
        let stream = self.stream(name)?;
        let mut state = lock(&stream.state);
        state.expire(Instant::now());
        Ok(state.info())
    }

    async fn create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>> {
        config.validate()?;
        let stream = self.stream(stream)?;
        Ok(Arc::new(MemoryConsumer::open(stream, config)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Every subscriber gets the publish's headers themselves, not a copy
    /// of each key and value, and reads them as published.
    #[tokio::test]
    async fn subscribers_share_a_messages_headers() {
        let log = MemoryLog::new(1 << 20);
        let mut first = log.subscribe("h.>").await.expect("subscribe");
        let mut second = log.subscribe("h.*").await.expect("subscribe");
        let headers: Headers = [("Kanade-Sig".to_owned(), "abc".to_owned())].into();
        log.publish("h.1", headers.clone(), Bytes::from_static(b"x"))
            .await
            .expect("publish");
        let a = first.next().await.expect("first");
        let b = second.next().await.expect("second");
        assert_eq!(*a.headers, headers);
        assert!(Arc::ptr_eq(&a.headers, &b.headers));
    }

    /// A gated subscription that was dropped is pruned at the next
    /// delivery even while its gate loses messages; a live one whose gate
    /// is shut stays, and gets what arrives once the gate opens.
    #[tokio::test]
    async fn a_gone_subscriber_is_pruned_while_its_gate_is_shut() {
        let log = MemoryLog::new(1 << 20);
        let open = Arc::new(AtomicBool::new(false));
        let gate: ArrivalGate = {
            let open = open.clone();
            Arc::new(move || open.load(Ordering::SeqCst))
        };
        let mut kept = log
            .subscribe_admitting("g.>", gate.clone())
            .await
            .expect("subscribe");
        let gone = log
            .subscribe_admitting("g.>", gate)
            .await
            .expect("subscribe");
        assert_eq!(lock(&log.state).subscribers.len(), 2);
        drop(gone);
        log.publish("g.1", Headers::new(), Bytes::from_static(b"1"))
            .await
            .expect("publish");
        assert_eq!(lock(&log.state).subscribers.len(), 1);
        open.store(true, Ordering::SeqCst);
        log.publish("g.2", Headers::new(), Bytes::from_static(b"2"))
            .await
            .expect("publish");
        assert_eq!(kept.next().await.expect("message").subject, "g.2");
    }
}
