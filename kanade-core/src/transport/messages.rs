//! The message log: plain publish / subscribe plus durable streams and
//! consumers with explicit acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{TransportError, TransportResult};

/// Header carrying a publisher-chosen message id; a stream drops a second
/// message with the same id inside its duplicate window.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// Message headers (name → value).
pub type Headers = BTreeMap<String, String>;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published to.
    pub subject: String,
    /// Its headers, shared by every copy of the message: a publish
    /// delivered to thousands of subscriptions (a command fanned out to a
    /// fleet, four signature headers each) hands each one a reference, not
    /// a copy of every key and value.
    pub headers: Arc<Headers>,
    /// Its body.
    pub payload: Bytes,
}

/// A stream's acknowledgement of a publish it captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The stream that stored the message.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// `true` when the message id was seen inside the window and this
    /// publish was dropped (the sequence is the original's).
    pub duplicate: bool,
}

/// A durable stream's definition. Limits discard the oldest messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Stream name.
    pub name: String,
    /// Subject patterns it captures.
    pub subjects: Vec<String>,
    /// Messages kept per subject (`None`: unlimited).
    pub max_msgs_per_subject: Option<u64>,
    /// Total bytes kept (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// Oldest message kept (`None`: forever).
    pub max_age: Option<Duration>,
    /// Dedup window for [`MESSAGE_ID_HEADER`] (`None`: no dedup).
    pub duplicate_window: Option<Duration>,
}

impl StreamConfig {
    /// A stream with no limits over `subjects`.
    pub fn new(name: impl Into<String>, subjects: &[&str]) -> Self {
        Self {
            name: name.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            max_msgs_per_subject: None,
            max_bytes: None,
            max_age: None,
            duplicate_window: None,
        }
    }

    /// Checks the definition: at least one valid subject pattern, and a
    /// per-subject limit of at least 1 when set.
    pub fn validate(&self) -> TransportResult<()> {
        if self.subjects.is_empty() {
            return Err(TransportError::InvalidConfig(format!(
                "stream {} has no subjects",
                self.name
            )));
        }
        for pattern in &self.subjects {
            super::subject::validate_pattern(pattern)?;
        }
        if self.max_msgs_per_subject == Some(0) {
            return Err(TransportError::InvalidConfig(format!(
                "stream {}: max_msgs_per_subject must be at least 1",
                self.name
            )));
        }
        Ok(())
    }

    /// The definition of one of kanade's own streams.
    pub fn from_spec(spec: &crate::names::StreamSpec) -> Self {
        Self {
            name: spec.name.to_owned(),
            subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
            max_msgs_per_subject: spec.max_msgs_per_subject,
            max_bytes: Some(spec.max_bytes),
            max_age: Some(spec.max_age),
            duplicate_window: Some(Duration::from_secs(120)),
        }
    }
}

/// What a stream holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its definition.
    pub config: StreamConfig,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored (payloads and subjects).
    pub bytes: u64,
    /// Sequence of the oldest stored message (0 when empty).
    pub first_sequence: u64,
    /// Sequence of the newest message ever stored (0 when none).
    pub last_sequence: u64,
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliverPolicy {
    /// Every stored message, oldest first.
    All,
    /// The newest stored message of each subject, then everything new.
    LastPerSubject,
    /// Only messages stored after the consumer was created.
    New,
}

/// A durable consumer's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Durable name; creating it again resumes the same consumer.
    pub name: String,
    /// Subject patterns it receives (empty: everything in the stream).
    pub filter_subjects: Vec<String>,
    /// Where it starts.
    pub deliver_policy: DeliverPolicy,
    /// How long a delivery may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
    /// Most deliveries of one message (`None`: unlimited).
    pub max_deliver: Option<u32>,
}

impl ConsumerConfig {
    /// Checks the definition: valid filter patterns, and `max_deliver` of
    /// at least 1 when set.
    pub fn validate(&self) -> TransportResult<()> {
        for pattern in &self.filter_subjects {
            super::subject::validate_pattern(pattern)?;
        }
        if self.max_deliver == Some(0) {
            return Err(TransportError::InvalidConfig(format!(
                "consumer {}: max_deliver must be at least 1",
                self.name
            )));
        }
        Ok(())
    }

    /// A consumer named `name` with 30 s ack wait and unlimited deliveries.
    pub fn new(name: impl Into<String>, deliver_policy: DeliverPolicy) -> Self {
        Self {
            name: name.into(),
            filter_subjects: Vec::new(),
            deliver_policy,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
        }
    }
}

/// Acknowledges one delivery; implemented by each transport.
#[async_trait]
pub trait AckHandle: Send + Sync {
    /// The message is done; never deliver it again.
    async fn ack(&self) -> TransportResult<()>;
    /// The message failed; deliver it again after `delay` (or at once).
    async fn nak(&self, delay: Option<Duration>) -> TransportResult<()>;
}

/// One message handed out by a [`Consumer`], to be acked or naked.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// How many times it has been delivered, this time included.
    pub delivered: u32,
    acker: Arc<dyn AckHandle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.message.subject)
            .field("stream_sequence", &self.stream_sequence)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Delivery {
    /// Pairs a message with the handle that acknowledges it.
    pub fn new(
        message: Message,
        stream_sequence: u64,
        delivered: u32,
        acker: Arc<dyn AckHandle>,
    ) -> Self {
        Self {
            message,
            stream_sequence,
            delivered,
            acker,
        }
    }

    /// The message is done; never deliver it again.
    pub async fn ack(&self) -> TransportResult<()> {
        self.acker.ack().await
    }

    /// The message failed; deliver it again after `delay` (or at once).
    pub async fn nak(&self, delay: Option<Duration>) -> TransportResult<()> {
        self.acker.nak(delay).await
    }

    /// The acknowledgement handle, for wrappers that re-package deliveries.
    pub fn ack_handle(&self) -> Arc<dyn AckHandle> {
        self.acker.clone()
    }
}

/// A pull-style durable consumer.
///
/// Calls to [`next`](Consumer::next) on one handle may be made from several
/// tasks; an implementation may serve them one at a time.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Waits for the next delivery (a new message or a redelivery).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the returned future before it completes (a
    /// losing `tokio::select!` branch, an expired `tokio::time::timeout`)
    /// never loses a delivery and never counts as one: a message the dropped
    /// call had already taken is handed out by the next call on the same
    /// consumer, in order, with the same `delivered` count. Only dropping
    /// the consumer itself leaves such a message unacknowledged; the stream
    /// then redelivers it after `ack_wait`, like any unacknowledged delivery.
    ///
    /// A delivery parked by a dropped call keeps its `ack_wait` clock: if
    /// the next call comes only after `ack_wait` has run out, the stream may
    /// already have redelivered the message, and both copies are handed out
    /// (the parked one first, with its older `delivered` count). That is
    /// the at-least-once contract every durable consumer has; a consumer
    /// polled again promptly (as in any `select!` loop) never sees it.
    async fn next(&self) -> TransportResult<Delivery>;

    /// Waits for the next delivery like [`next`](Consumer::next), then
    /// adds up to `max - 1` more that are ready now, without waiting for
    /// them: a projector can store a burst in one transaction and
    /// acknowledge each after it. The default asks `next` again while it
    /// answers at once (`next` is cancel-safe); a transport with a cheaper
    /// way (one fetch of what is pending) overrides it. An error after the
    /// first delivery ends the batch early; the next call meets it again.
    /// Unlike `next`, a dropped `next_batch` may leave deliveries it had
    /// taken to be redelivered after `ack_wait`: do not race it.
    async fn next_batch(&self, max: usize) -> TransportResult<Vec<Delivery>> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max {
            match tokio::time::timeout(std::time::Duration::ZERO, self.next()).await {
                Ok(Ok(delivery)) => batch.push(delivery),
                _ => break,
            }
        }
        Ok(batch)
    }
}

/// An ephemeral subscription's message source.
#[async_trait]
pub trait MessageStream: Send {
    /// The next message, or `None` once the subscription has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the returned future before it completes (a
    /// losing `tokio::select!` branch, an expired `tokio::time::timeout`)
    /// never loses a message: a message the dropped call had already taken
    /// is returned by the next call, in order. Dropping the subscription
    /// itself discards whatever it has buffered.
    async fn next(&mut self) -> Option<Message>;
}

/// A subscription fed through a channel: the in-memory and file buses'
/// subscriptions, and what [`MessageLog::subscribe_admitting`]'s default
/// forwarding task lets through.
pub(crate) struct ChannelSubscription(pub(crate) tokio::sync::mpsc::UnboundedReceiver<Message>);

#[async_trait]
impl MessageStream for ChannelSubscription {
    // Cancel-safe: `recv` is.
    async fn next(&mut self) -> Option<Message> {
        self.0.recv().await
    }
}

/// An ephemeral subscription; dropping it unsubscribes.
///
/// Its [`next`](MessageStream::next) is cancel-safe: polling it in a
/// `tokio::select!` loop or under a timeout loses nothing.
pub type Subscription = Box<dyn MessageStream>;

/// Decides, as each message arrives at a subscription, whether it is
/// kept (`true`) or lost (`false`); see [`MessageLog::subscribe_admitting`].
/// It may be called under a transport's internal lock (the in-memory one
/// asks it while delivering a publish): keep it quick, never call into a
/// transport from it and never panic in it (a panic there can leave a
/// publish delivered to only some subscribers) — reading a flag, as the
/// fault layer's link state does, is what it is for.
pub type ArrivalGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Publish / subscribe plus durable streams and consumers.
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Publishes a message. Returns the stream ack when a stream captured
    /// it, `None` for a plain (un-captured) publish.
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>>;

    /// Subscribes to every later message matching `pattern`.
    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription>;

    /// [`subscribe`](MessageLog::subscribe), keeping only the messages
    /// for which `admit` says `true` when they arrive — how a fault layer
    /// loses what arrives while its link is down. The default forwards
    /// from a plain subscription on a task of its own, asking `admit` as
    /// each message comes through (the task ends with the returned
    /// subscription); a transport that can ask at delivery itself (the
    /// in-memory one, under its publish) saves that task and its hop.
    /// The returned subscription is cancel-safe like any other.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](MessageLog::subscribe) (an invalid pattern, a
    /// transport that is down).
    ///
    /// # Panics
    ///
    /// The default spawns its task with `tokio::spawn`: call it inside a
    /// Tokio runtime, as every transport call is.
    async fn subscribe_admitting(
        &self,
        pattern: &str,
        admit: ArrivalGate,
    ) -> TransportResult<Subscription> {
        let mut inner = self.subscribe(pattern).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    () = tx.closed() => break,
                    message = inner.next() => message,
                };
                let Some(message) = message else { break };
                if admit() && tx.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(Box::new(ChannelSubscription(rx)))
    }

    /// Creates a stream, or returns the existing one if the definition is
    /// the same (limits may be updated; another subject set is an error
    /// only if it overlaps a different stream).
    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo>;

    /// A stream's current state.
    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo>;

    /// Creates a durable consumer on `stream`, or resumes it by name.
    async fn create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>>;

    /// How many messages the durable consumer `consumer` of `stream` has
    /// not yet had acknowledged (not yet delivered plus delivered and
    /// unacknowledged): a projector's lag. `None` when the transport cannot
    /// tell (the default); an error when the consumer does not exist.
    async fn consumer_pending(&self, stream: &str, consumer: &str) -> TransportResult<Option<u64>> {
        let _ = (stream, consumer);
        Ok(None)
    }
}
