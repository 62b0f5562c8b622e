//! The message log over core NATS and JetStream streams / pull consumers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use kanade_core::transport::subject::{validate_pattern, validate_subject};
use kanade_core::transport::{
    AckHandle, Consumer, ConsumerConfig, DeliverPolicy, Delivery, Headers, Message, MessageLog,
    MessageStream, PublishAck, StreamConfig, StreamInfo, Subscription, TransportError,
    TransportResult,
};

use crate::error::{backend, jetstream as js_error};
use crate::{ConnectionState, Shared};

pub(crate) struct NatsLog {
    pub(crate) shared: Arc<Shared>,
}

fn to_header_map(headers: &Headers) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(name.as_str(), value.as_str());
    }
    map
}

fn from_header_map(headers: Option<&async_nats::HeaderMap>) -> Headers {
    let mut out = Headers::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            if let Some(value) = values.first() {
                out.insert(name.to_string(), value.to_string());
            }
        }
    }
    out
}

fn to_message(message: async_nats::Message) -> Message {
    Message {
        subject: message.subject.to_string(),
        headers: from_header_map(message.headers.as_ref()).into(),
        payload: message.payload,
    }
}

/// The JetStream stream definition for a core [`StreamConfig`].
pub(crate) fn stream_config(config: &StreamConfig, replicas: usize) -> stream::Config {
    stream::Config {
        name: config.name.clone(),
        subjects: config.subjects.clone(),
        max_messages_per_subject: config.max_msgs_per_subject.map_or(-1, |n| n as i64),
        max_bytes: config.max_bytes.map_or(-1, |n| n as i64),
        max_age: config.max_age.unwrap_or(Duration::ZERO),
        duplicate_window: config.duplicate_window.unwrap_or(Duration::from_secs(120)),
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

fn core_stream_config(config: &stream::Config) -> StreamConfig {
    StreamConfig {
        name: config.name.clone(),
        subjects: config.subjects.clone(),
        max_msgs_per_subject: (config.max_messages_per_subject >= 0)
            .then_some(config.max_messages_per_subject as u64),
        max_bytes: (config.max_bytes >= 0).then_some(config.max_bytes as u64),
        max_age: (!config.max_age.is_zero()).then_some(config.max_age),
        duplicate_window: Some(config.duplicate_window),
    }
}

fn stream_info(info: &stream::Info) -> StreamInfo {
    StreamInfo {
        config: core_stream_config(&info.config),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_sequence: if info.state.messages == 0 {
            0
        } else {
            info.state.first_sequence
        },
        last_sequence: info.state.last_sequence,
    }
}

struct NatsSubscription(async_nats::Subscriber);

#[async_trait]
impl MessageStream for NatsSubscription {
    async fn next(&mut self) -> Option<Message> {
        self.0.next().await.map(to_message)
    }
}

impl NatsLog {
    /// The stream that captures `subject`, from a listing of the server's
    /// streams refreshed every [`ROUTE_TTL`](crate::ROUTE_TTL): a stream
    /// created elsewhere is noticed within that time (until then its
    /// messages are still stored, only without an ack).
    async fn capturing_stream(&self, subject: &str) -> TransportResult<Option<String>> {
        // kanade's own streams (results, commands, events, …) always
        // capture their subjects once provisioned: such a publish waits for
        // its ack even if a listing taken mid-failover left the stream out.
        if let Some(spec) = kanade_core::names::ALL_STREAMS
            .iter()
            .find(|spec| kanade_core::transport::subject::matches_any(spec.subjects, subject))
        {
            return Ok(Some(spec.name.to_owned()));
        }
        if let Some(routes) = self.shared.fresh_routes() {
            return Ok(routes.capturing(subject));
        }
        let mut listing = self.shared.js.streams();
        let mut streams = Vec::new();
        while let Some(info) = listing.next().await {
            let info = info.map_err(|e| backend("listing streams", e))?;
            streams.push((info.config.name.clone(), info.config.subjects.clone()));
        }
        let routes = crate::StreamRoutes {
            listed_at: std::time::Instant::now(),
            streams,
        };
        let stream = routes.capturing(subject);
        *self.shared.routes() = Some(routes);
        Ok(stream)
    }

    fn check_payload(&self, payload: &Bytes) -> TransportResult<()> {
        let limit = self.shared.max_payload();
        if payload.len() > limit {
            return Err(TransportError::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    async fn get_stream(&self, name: &str) -> TransportResult<stream::Stream> {
        self.shared
            .js
            .get_stream(name)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(inner) => {
                    js_error("getting", &format!("stream {name}"), &inner)
                }
                _ => backend("getting stream", e),
            })
    }
}

#[async_trait]
impl MessageLog for NatsLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>> {
        validate_subject(subject)?;
        self.check_payload(&payload)?;
        self.shared.ensure_connected()?;
        if self.capturing_stream(subject).await?.is_none() {
            // No stream captures it: a plain (fire-and-forget) publish.
            self.shared
                .client
                .publish_with_headers(subject.to_owned(), to_header_map(&headers), payload)
                .await
                .map_err(|e| backend("publishing", e))?;
            return Ok(None);
        }
        let pending = self
            .shared
            .js
            .publish_with_headers(subject.to_owned(), to_header_map(&headers), payload)
            .await
            .map_err(|e| backend("publishing", e))?;
        match pending.await {
            Ok(ack) => Ok(Some(PublishAck {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            })),
            Err(e) => match e.kind() {
                // The listing says a stream captures this subject, yet none
                // answered: in a cluster, its leader is moving. Never report
                // that as a success — the message may not be stored.
                jetstream::context::PublishErrorKind::StreamNotFound => {
                    self.shared.forget_routes();
                    Err(TransportError::Disconnected(format!(
                        "no stream acknowledged the publish on {subject} (its leader may be moving); retry"
                    )))
                }
                jetstream::context::PublishErrorKind::TimedOut => {
                    Err(TransportError::Timeout(self.shared.request_timeout))
                }
                jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                    Err(TransportError::PayloadTooLarge {
                        size: 0,
                        limit: self.shared.max_payload(),
                    })
                }
                _ => Err(backend("waiting for the publish ack", e)),
            },
        }
    }

    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription> {
        validate_pattern(pattern)?;
        let subscriber = self
            .shared
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| backend("subscribing", e))?;
        // Make sure the server knows the subscription before we return, so
        // a publish right after it is seen.
        self.shared
            .client
            .flush()
            .await
            .map_err(|e| backend("flushing", e))?;
        Ok(Box::new(NatsSubscription(subscriber)))
    }

    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo> {
        config.validate()?;
        let wanted = stream_config(&config, self.shared.replicas);
        self.shared.forget_routes();
        let info = self
            .shared
            .js
            .create_or_update_stream(wanted)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(inner) => {
                    js_error("creating", &format!("stream {}", config.name), &inner)
                }
                _ => backend("creating stream", e),
            })?;
        Ok(stream_info(&info))
    }

    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo> {
        let mut stream = self.get_stream(name).await?;
        let info = stream.info().await.map_err(|e| backend("stream info", e))?;
        Ok(stream_info(info))
    }

    async fn consumer_pending(&self, stream: &str, consumer: &str) -> TransportResult<Option<u64>> {
        let stream = self.get_stream(stream).await?;
        let info = stream
            .consumer_info(consumer)
            .await
            .map_err(|e| backend("consumer info", e))?;
        let unacked = u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
        Ok(Some(info.num_pending.saturating_add(unacked)))
    }

    async fn create_consumer(
        &self,
        stream_name: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>> {
        config.validate()?;
        let stream = self.get_stream(stream_name).await?;
        let pull_config = pull::Config {
            durable_name: Some(config.name.clone()),
            deliver_policy: match config.deliver_policy {
                DeliverPolicy::All => jetstream::consumer::DeliverPolicy::All,
                DeliverPolicy::LastPerSubject => jetstream::consumer::DeliverPolicy::LastPerSubject,
                DeliverPolicy::New => jetstream::consumer::DeliverPolicy::New,
            },
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.map_or(-1, i64::from),
            filter_subjects: config.filter_subjects.clone(),
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(pull_config)
            .await
            .map_err(|e| match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(inner) => {
                    js_error("creating", &format!("consumer {}", config.name), &inner)
                }
                _ => backend("creating consumer", e),
            })?;
        Ok(Arc::new(NatsConsumer {
            consumer,
            pull: tokio::sync::Mutex::new(None),
            state: self.shared.state.clone(),
        }))
    }
}

struct NatsConsumer {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// The outstanding pull request (one message), if a `next()` sent one.
    /// Kept here rather than in `next()`: the server hands the message to
    /// this request's inbox whether or not anyone still listens, so a
    /// `next()` dropped while waiting must leave the request for the next
    /// call to collect (the contract's cancel safety). The lock also
    /// serialises `next()` calls on this handle.
    pull: tokio::sync::Mutex<Option<Pull>>,
    /// The connection's state, to tell when a request was left behind on a
    /// connection that is gone.
    state: tokio::sync::watch::Receiver<ConnectionState>,
}

/// An outstanding pull request and the connection events seen when it was
/// sent.
struct Pull {
    batch: pull::Batch,
    state: tokio::sync::watch::Receiver<ConnectionState>,
}

/// Resolves once the client has connected again after `state` was last
/// seen: a pull request sent before that was held by the old connection's
/// server, which may be gone (a member restarted), so it is asked again at
/// once instead of after its expiry. Never resolves if the client closed.
async fn reconnected_since(state: &mut tokio::sync::watch::Receiver<ConnectionState>) {
    if state.changed().await.is_err()
        || state
            .wait_for(|s| *s == ConnectionState::Connected)
            .await
            .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// How long one pull request waits on the server before it is renewed.
const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// How long past its expiry the client waits for a request's end before it
/// gives the request up (the server holding it may be gone).
const PULL_GRACE: Duration = Duration::from_secs(2);

impl NatsConsumer {
    /// Sends a pull request for one message. Cancel-safe: the request is
    /// the last thing sent, so a request is either not sent or returned.
    async fn request(&self) -> TransportResult<Pull> {
        let mut state = self.state.clone();
        state.mark_unchanged();
        let batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRY)
            .messages()
            .await
            .map_err(|e| backend("pulling", e))?;
        Ok(Pull { batch, state })
    }
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&self) -> TransportResult<Delivery> {
        let mut pull = self.pull.lock().await;
        loop {
            let Pull { batch, state } = match &mut *pull {
                Some(request) => request,
                none => none.insert(self.request().await?),
            };
            // `Batch` is a stream over a subscription: polling it is
            // cancel-safe, and it stays in `pull` if this call is dropped.
            // The server ends an expired request with a status message —
            // unless the server that held it died (a cluster member, the
            // consumer's leader moving): then the client gives up on its
            // own a little after the expiry and asks again, wherever the
            // consumer leads now (an unacknowledged message is redelivered
            // after its ack wait).
            // A reconnect in the meantime (the client moved to another
            // member) gives the request up at once, the same way.
            let item = tokio::select! {
                biased;
                item = tokio::time::timeout(PULL_EXPIRY + PULL_GRACE, batch.next()) => {
                    item.unwrap_or_default()
                }
                () = reconnected_since(state) => None,
            };
            // One message was asked for: the request is spent either way.
            *pull = None;
            let Some(message) = item else {
                // Expired without a message: ask again.
                continue;
            };
            return to_delivery(message);
        }
    }

    async fn next_batch(&self, max: usize) -> TransportResult<Vec<Delivery>> {
        let mut batch = vec![self.next().await?];
        if max <= 1 {
            return Ok(batch);
        }
        // What is pending now, in one no-wait fetch (the server answers at
        // once, with a status when it has no more).
        let _pull = self.pull.lock().await;
        let Ok(mut fetched) = self.consumer.fetch().max_messages(max - 1).messages().await else {
            return Ok(batch);
        };
        while batch.len() < max {
            match tokio::time::timeout(PULL_GRACE, fetched.next()).await {
                Ok(Some(message)) => match to_delivery(message) {
                    Ok(delivery) => batch.push(delivery),
                    Err(_) => break,
                },
                _ => break,
            }
        }
        Ok(batch)
    }
}

/// A pulled message as a [`Delivery`] (its stream sequence, delivery
/// count and acknowledger).
fn to_delivery(
    message: Result<jetstream::Message, impl std::fmt::Display>,
) -> TransportResult<Delivery> {
    let message = message.map_err(|e| TransportError::Backend(format!("pulling: {e}").into()))?;
    let (stream_sequence, delivered) = {
        let info = message
            .info()
            .map_err(|e| TransportError::Backend(format!("pulling: {e}").into()))?;
        (
            info.stream_sequence,
            u32::try_from(info.delivered).unwrap_or(u32::MAX),
        )
    };
    let (message, acker) = message.split();
    Ok(Delivery::new(
        to_message(message),
        stream_sequence,
        delivered,
        Arc::new(NatsAck(acker)),
    ))
}

struct NatsAck(jetstream::message::Acker);

#[async_trait]
impl AckHandle for NatsAck {
    async fn ack(&self) -> TransportResult<()> {
        self.0
            .ack_with(jetstream::AckKind::Ack)
            .await
            .map_err(|e| TransportError::Backend(format!("ack: {e}").into()))
    }

    async fn nak(&self, delay: Option<Duration>) -> TransportResult<()> {
        self.0
            .ack_with(jetstream::AckKind::Nak(delay))
            .await
            .map_err(|e| TransportError::Backend(format!("nak: {e}").into()))
    }
}
