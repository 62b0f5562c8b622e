//! Fault injection: wraps any [`Transport`] and, from a seeded RNG or a
//! scripted plan, drops, duplicates, delays and reorders publishes and
//! deliveries, and disconnects / reconnects on command.
//!
//! The same seed (and the same sequence of calls) gives the same faults,
//! and every injected fault is recorded in [`FaultInjector::events`].
//!
//! | fault | on a publish | on a delivery |
//! |---|---|---|
//! | drop | not sent; the call fails with `Timeout` (no ack) | not handed out (a consumer redelivers it after ack wait) |
//! | lose ack | sent, but the call fails with `Timeout` | — |
//! | duplicate | sent twice | handed out twice |
//! | delay | sent after a pause | handed out after a pause |
//! | reorder | — | held back and handed out after the next one |
//!
//! While disconnected every call fails with
//! [`TransportError::Disconnected`] and subscriptions lose what arrives.
//!
//! The wrappers keep the contract's cancel safety: a delayed or reordered
//! message is parked in the subscription or consumer (with the instant it
//! is due), not in a local of `next()`, so a `next()` dropped during the
//! injected pause loses nothing — the next call hands it out, without
//! deciding a new fault for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    AckHandle, Capabilities, Consumer, ConsumerConfig, Delivery, Headers, KeyValue, KvConfig,
    KvWatch, Message, MessageLog, MessageStream, ObjectInfo, ObjectReader, ObjectStore,
    ObjectStoreConfig, PublishAck, StreamConfig, StreamInfo, Subscription, Transport,
    TransportError, TransportResult,
};

/// A fault applied to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishFault {
    /// Not sent; the caller sees a timeout.
    Drop,
    /// Sent, but the caller sees a timeout.
    LoseAck,
    /// Sent twice.
    Duplicate,
    /// Sent after this pause.
    Delay(Duration),
}

/// A fault applied to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryFault {
    /// Not handed out.
    Drop,
    /// Handed out twice.
    Duplicate,
    /// Handed out after this pause.
    Delay(Duration),
    /// Held back and handed out after the next message.
    Reorder,
}

/// Probabilities (0.0..=1.0) of each fault, drawn from a seeded RNG.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRates {
    /// RNG seed.
    pub seed: u64,
    /// Publish dropped.
    pub drop_publish: f64,
    /// Publish sent but ack lost.
    pub lose_ack: f64,
    /// Publish sent twice.
    pub duplicate_publish: f64,
    /// Publish delayed.
    pub delay_publish: f64,
    /// Delivery dropped.
    pub drop_delivery: f64,
    /// Delivery duplicated.
    pub duplicate_delivery: f64,
    /// Delivery delayed.
    pub delay_delivery: f64,
    /// Delivery reordered.
    pub reorder_delivery: f64,
    /// Longest injected delay (delays are uniform in 0..=max_delay).
    pub max_delay: Duration,
}

impl FaultRates {
    /// No faults at all, with `seed`.
    pub fn none(seed: u64) -> Self {
        Self {
            seed,
            drop_publish: 0.0,
            lose_ack: 0.0,
            duplicate_publish: 0.0,
            delay_publish: 0.0,
            drop_delivery: 0.0,
            duplicate_delivery: 0.0,
            delay_delivery: 0.0,
            reorder_delivery: 0.0,
            max_delay: Duration::from_millis(50),
        }
    }

    /// Every fault at probability `p`.
    pub fn uniform(seed: u64, p: f64) -> Self {
        Self {
            drop_publish: p,
            lose_ack: p,
            duplicate_publish: p,
            delay_publish: p,
            drop_delivery: p,
            duplicate_delivery: p,
            delay_delivery: p,
            reorder_delivery: p,
            ..Self::none(seed)
        }
    }
}

/// Where faults come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultPlan {
    /// Drawn at random from seeded rates.
    Random(FaultRates),
    /// Taken in order: the n-th publish gets `publishes[n]`, the n-th
    /// delivery gets `deliveries[n]`; `None` (or past the end) means no fault.
    Scripted {
        /// Faults for successive publishes.
        publishes: Vec<Option<PublishFault>>,
        /// Faults for successive deliveries.
        deliveries: Vec<Option<DeliveryFault>>,
    },
}

/// One injected fault, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultEvent {
    /// A publish to `subject` got `fault`.
    Publish {
        /// The subject.
        subject: String,
        /// The fault.
        fault: PublishFault,
    },
    /// A delivery from `subject` got `fault`.
    Delivery {
        /// The subject.
        subject: String,
        /// The fault.
        fault: DeliveryFault,
    },
    /// The transport went down.
    Disconnected,
    /// The transport came back.
    Reconnected,
}

/// Decides faults and holds the connection switch; shared by every wrapper
/// of one [`FaultyTransport`].
#[derive(Debug)]
pub struct FaultInjector {
    state: Mutex<InjectorState>,
    down: AtomicBool,
}

#[derive(Debug)]
struct InjectorState {
    plan: FaultPlan,
    rng: fastrand::Rng,
    publishes: usize,
    deliveries: usize,
    /// Each fault with the (tokio) instant it was injected.
    events: Vec<(tokio::time::Instant, FaultEvent)>,
}

impl FaultInjector {
    /// An injector following `plan`.
    pub fn new(plan: FaultPlan) -> Arc<Self> {
        let seed = match &plan {
            FaultPlan::Random(rates) => rates.seed,
            FaultPlan::Scripted { .. } => 0,
        };
        Arc::new(Self {
            state: Mutex::new(InjectorState {
                plan,
                rng: fastrand::Rng::with_seed(seed),
                publishes: 0,
                deliveries: 0,
                events: Vec::new(),
            }),
            down: AtomicBool::new(false),
        })
    }

    fn record(&self, event: FaultEvent) {
        self.state()
            .events
            .push((tokio::time::Instant::now(), event));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, InjectorState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every fault injected so far, in order.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.state().events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Switches to another plan from the next operation on (a simulation
    /// calms the network this way when its fault window ends). The RNG
    /// restarts from the new plan's seed; counters and the log carry on.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.state();
        if let FaultPlan::Random(rates) = &plan {
            state.rng = fastrand::Rng::with_seed(rates.seed);
        }
        state.plan = plan;
    }

    /// Every fault injected so far with the tokio instant it happened
    /// (simulated time under a paused runtime).
    pub fn timed_events(&self) -> Vec<(tokio::time::Instant, FaultEvent)> {
        self.state().events.clone()
    }

    /// Takes the transport down: calls fail with `Disconnected`.
    pub fn disconnect(&self) {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.record(FaultEvent::Disconnected);
        }
    }

    /// Brings the transport back.
    pub fn reconnect(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            self.record(FaultEvent::Reconnected);
        }
    }

    /// Whether calls currently go through.
    pub fn is_connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    fn check_connected(&self) -> TransportResult<()> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(TransportError::Disconnected(
                "fault injection: transport is down".into(),
            ))
        }
    }

    fn publish_fault(&self, subject: &str) -> Option<PublishFault> {
        self.decide(
            subject,
            |state| &mut state.publishes,
            |plan| match plan {
                FaultPlan::Scripted { publishes, .. } => Some(publishes),
                FaultPlan::Random(_) => None,
            },
            |rates, delay| {
                [
                    (rates.drop_publish, PublishFault::Drop),
                    (rates.lose_ack, PublishFault::LoseAck),
                    (rates.duplicate_publish, PublishFault::Duplicate),
                    (rates.delay_publish, PublishFault::Delay(delay)),
                ]
            },
            |subject, fault| FaultEvent::Publish { subject, fault },
        )
    }

    fn delivery_fault(&self, subject: &str) -> Option<DeliveryFault> {
        self.decide(
            subject,
            |state| &mut state.deliveries,
            |plan| match plan {
                FaultPlan::Scripted { deliveries, .. } => Some(deliveries),
                FaultPlan::Random(_) => None,
            },
            |rates, delay| {
                [
                    (rates.drop_delivery, DeliveryFault::Drop),
                    (rates.duplicate_delivery, DeliveryFault::Duplicate),
                    (rates.delay_delivery, DeliveryFault::Delay(delay)),
                    (rates.reorder_delivery, DeliveryFault::Reorder),
                ]
            },
            |subject, fault| FaultEvent::Delivery { subject, fault },
        )
    }

    /// The fault for the next operation of one kind: the scripted one at its
    /// index, or a draw from the rates (a delay length, then which fault);
    /// recorded when there is one.
    fn decide<F: Copy>(
        &self,
        subject: &str,
        counter: fn(&mut InjectorState) -> &mut usize,
        scripted: fn(&FaultPlan) -> Option<&Vec<Option<F>>>,
        choices: fn(&FaultRates, Duration) -> [(f64, F); 4],
        event: fn(String, F) -> FaultEvent,
    ) -> Option<F> {
        let mut state = self.state();
        let index = {
            let count = counter(&mut state);
            *count += 1;
            *count - 1
        };
        let fault = match (&state.plan, scripted(&state.plan)) {
            (_, Some(script)) => script.get(index).copied().flatten(),
            (FaultPlan::Random(rates), None) => {
                let rates = rates.clone();
                let rng = &mut state.rng;
                let delay = random_delay(rng, rates.max_delay);
                pick(rng, &choices(&rates, delay))
            }
            (FaultPlan::Scripted { .. }, None) => None,
        };
        if let Some(fault) = fault {
            state.events.push((
                tokio::time::Instant::now(),
                event(subject.to_owned(), fault),
            ));
        }
        fault
    }
}

/// Draws one uniform number and picks the first fault whose cumulative
/// probability covers it.
fn pick<F: Copy>(rng: &mut fastrand::Rng, choices: &[(f64, F)]) -> Option<F> {
    let roll = rng.f64();
    let mut cumulative = 0.0;
    for (p, fault) in choices {
        cumulative += p.clamp(0.0, 1.0);
        if roll < cumulative {
            return Some(*fault);
        }
    }
    None
}

fn random_delay(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    Duration::from_micros(rng.u64(0..=max.as_micros() as u64))
}

/// How long a reordered message waits for a successor before it is released.
const REORDER_WINDOW: Duration = Duration::from_millis(100);

/// A message whose delivery fault is decided but which is not handed out
/// yet.
enum Held<M> {
    /// Delayed: handed out at `until`.
    Delayed {
        item: M,
        until: tokio::time::Instant,
    },
    /// Reordered: handed out after the next arrival, or at `until` if none
    /// comes first.
    Reordered {
        item: M,
        until: tokio::time::Instant,
    },
}

impl<M> Held<M> {
    fn delayed(item: M, pause: Duration) -> Self {
        Held::Delayed {
            item,
            until: tokio::time::Instant::now() + pause,
        }
    }

    fn reordered(item: M) -> Self {
        Held::Reordered {
            item,
            until: tokio::time::Instant::now() + REORDER_WINDOW,
        }
    }

    fn into_item(self) -> M {
        match self {
            Held::Delayed { item, .. } | Held::Reordered { item, .. } => item,
        }
    }
}

/// What a subscription or consumer wrapper has taken from the inner
/// transport but not handed out yet. It lives in the wrapper, so a dropped
/// `next()` loses none of it (the contract's cancel safety).
struct Parked<M> {
    /// Ready to hand out, in order (duplicates, a reordered message's
    /// predecessor).
    ready: VecDeque<M>,
    /// A delayed or reordered message still waiting.
    held: Option<Held<M>>,
}

impl<M> Parked<M> {
    fn new() -> Self {
        Self {
            ready: VecDeque::new(),
            held: None,
        }
    }

    /// The held message's due instant and whether it waits for a
    /// successor (reorder) rather than just for time (delay).
    fn held_until(&self) -> Option<(tokio::time::Instant, bool)> {
        match &self.held {
            Some(Held::Delayed { until, .. }) => Some((*until, false)),
            Some(Held::Reordered { until, .. }) => Some((*until, true)),
            None => None,
        }
    }
}

/// A transport wrapped with fault injection.
#[derive(Clone)]
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    injector: Arc<FaultInjector>,
}

impl FaultyTransport {
    /// Wraps `inner` with faults from `plan`.
    pub fn new(inner: Arc<dyn Transport>, plan: FaultPlan) -> Self {
        Self {
            inner,
            injector: FaultInjector::new(plan),
        }
    }

    /// The injector: recorded events and the connection switch.
    pub fn injector(&self) -> Arc<FaultInjector> {
        self.injector.clone()
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        Arc::new(FaultyLog {
            inner: self.inner.messages(),
            injector: self.injector.clone(),
        })
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        self.injector.check_connected()?;
        Ok(Arc::new(FaultyKv {
            inner: self.inner.key_value(config).await?,
            injector: self.injector.clone(),
        }))
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        self.injector.check_connected()?;
        Ok(Arc::new(FaultyObjects {
            inner: self.inner.object_store(config).await?,
            injector: self.injector.clone(),
        }))
    }
}

struct FaultyLog {
    inner: Arc<dyn MessageLog>,
    injector: Arc<FaultInjector>,
}

#[async_trait]
impl MessageLog for FaultyLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>> {
        self.injector.check_connected()?;
        match self.injector.publish_fault(subject) {
            None => self.inner.publish(subject, headers, payload).await,
            Some(PublishFault::Drop) => Err(TransportError::Timeout(Duration::ZERO)),
            Some(PublishFault::LoseAck) => {
                self.inner.publish(subject, headers, payload).await?;
                Err(TransportError::Timeout(Duration::ZERO))
            }
            Some(PublishFault::Duplicate) => {
                let ack = self
                    .inner
                    .publish(subject, headers.clone(), payload.clone())
                    .await?;
                self.inner.publish(subject, headers, payload).await?;
                Ok(ack)
            }
            Some(PublishFault::Delay(pause)) => {
                tokio::time::sleep(pause).await;
                self.injector.check_connected()?;
                self.inner.publish(subject, headers, payload).await
            }
        }
    }

    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription> {
        self.injector.check_connected()?;
        let mut inner = self.inner.subscribe(pattern).await?;
        // Forward as messages arrive, so what arrives while down is lost.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let injector = self.injector.clone();
        tokio::spawn(async move {
            while let Some(message) = inner.next().await {
                if injector.is_connected() && tx.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(Box::new(FaultySubscription {
            arrived: rx,
            injector: self.injector.clone(),
            parked: Parked::new(),
        }))
    }

    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo> {
        self.injector.check_connected()?;
        self.inner.create_stream(config).await
    }

    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo> {
        self.injector.check_connected()?;
        self.inner.stream_info(name).await
    }

    async fn create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>> {
        self.injector.check_connected()?;
        Ok(Arc::new(FaultyConsumer {
            inner: self.inner.create_consumer(stream, config).await?,
            injector: self.injector.clone(),
            parked: tokio::sync::Mutex::new(Parked::new()),
        }))
    }
}

struct FaultySubscription {
    arrived: tokio::sync::mpsc::UnboundedReceiver<Message>,
    injector: Arc<FaultInjector>,
    parked: Parked<Message>,
}

#[async_trait]
impl MessageStream for FaultySubscription {
    // Cancel-safe: every await is on a cancel-safe future (`recv`, a sleep),
    // and a taken message is parked in `self.parked` before any await.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.parked.ready.pop_front() {
                return Some(message);
            }
            match self.parked.held_until() {
                Some((until, false)) => {
                    tokio::time::sleep_until(until).await;
                    return self.parked.held.take().map(Held::into_item);
                }
                Some((until, true)) => {
                    let successor = tokio::time::timeout_at(until, self.arrived.recv()).await;
                    let held = self.parked.held.take().map(Held::into_item);
                    match successor {
                        Ok(Some(successor)) => {
                            self.parked.ready.extend(held);
                            return Some(successor);
                        }
                        Ok(None) | Err(_) => return held,
                    }
                }
                None => {}
            }
            let message = self.arrived.recv().await?;
            match self.injector.delivery_fault(&message.subject) {
                None => return Some(message),
                Some(DeliveryFault::Drop) => {}
                Some(DeliveryFault::Duplicate) => {
                    self.parked.ready.push_back(message.clone());
                    return Some(message);
                }
                Some(DeliveryFault::Delay(pause)) => {
                    self.parked.held = Some(Held::delayed(message, pause));
                }
                Some(DeliveryFault::Reorder) => {
                    self.parked.held = Some(Held::reordered(message));
                }
            }
        }
    }
}

struct FaultyConsumer {
    inner: Arc<dyn Consumer>,
    injector: Arc<FaultInjector>,
    /// Also serialises `next()` calls on this handle.
    parked: tokio::sync::Mutex<Parked<Delivery>>,
}

impl FaultyConsumer {
    fn wrap(&self, delivery: &Delivery) -> Delivery {
        Delivery::new(
            delivery.message.clone(),
            delivery.stream_sequence,
            delivery.delivered,
            Arc::new(FaultyAck {
                inner: delivery.ack_handle(),
                injector: self.injector.clone(),
            }),
        )
    }
}

#[async_trait]
impl Consumer for FaultyConsumer {
    // Cancel-safe: the lock, the sleeps and the inner `next()` are
    // cancel-safe, and a taken delivery is parked before any await.
    async fn next(&self) -> TransportResult<Delivery> {
        let mut parked = self.parked.lock().await;
        loop {
            if let Some(delivery) = parked.ready.pop_front() {
                return Ok(delivery);
            }
            match parked.held_until() {
                Some((until, false)) => {
                    tokio::time::sleep_until(until).await;
                    if let Some(held) = parked.held.take() {
                        return Ok(held.into_item());
                    }
                }
                Some((until, true)) => {
                    let successor = tokio::time::timeout_at(until, self.inner.next()).await;
                    let held = parked.held.take().map(Held::into_item);
                    match successor {
                        Ok(Ok(successor)) => {
                            parked.ready.extend(held);
                            return Ok(self.wrap(&successor));
                        }
                        Ok(Err(_)) | Err(_) => {
                            if let Some(held) = held {
                                return Ok(held);
                            }
                        }
                    }
                }
                None => {}
            }
            self.injector.check_connected()?;
            let delivery = self.inner.next().await?;
            self.injector.check_connected()?;
            match self.injector.delivery_fault(&delivery.message.subject) {
                None => return Ok(self.wrap(&delivery)),
                Some(DeliveryFault::Drop) => {}
                Some(DeliveryFault::Duplicate) => {
                    parked.ready.push_back(self.wrap(&delivery));
                    return Ok(self.wrap(&delivery));
                }
                Some(DeliveryFault::Delay(pause)) => {
                    parked.held = Some(Held::delayed(self.wrap(&delivery), pause));
                }
                Some(DeliveryFault::Reorder) => {
                    parked.held = Some(Held::reordered(self.wrap(&delivery)));
                }
            }
        }
    }
}

struct FaultyAck {
    inner: Arc<dyn AckHandle>,
    injector: Arc<FaultInjector>,
}

#[async_trait]
impl AckHandle for FaultyAck {
    async fn ack(&self) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.ack().await
    }

    async fn nak(&self, delay: Option<Duration>) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.nak(delay).await
    }
}

struct FaultyKv {
    inner: Arc<dyn KeyValue>,
    injector: Arc<FaultInjector>,
}

#[async_trait]
impl KeyValue for FaultyKv {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn get(&self, key: &str) -> TransportResult<Option<super::KvEntry>> {
        self.injector.check_connected()?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.put(key, value).await
    }
    async fn create(&self, key: &str, value: Bytes) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: u64) -> TransportResult<u64> {
        self.injector.check_connected()?;
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.delete(key).await
    }
    async fn keys(&self) -> TransportResult<Vec<String>> {
        self.injector.check_connected()?;
        self.inner.keys().await
    }
    async fn watch(&self, pattern: &str) -> TransportResult<Box<dyn KvWatch>> {
        self.injector.check_connected()?;
        self.inner.watch(pattern).await
    }
    async fn history(&self, key: &str) -> TransportResult<Vec<super::KvEntry>> {
        self.injector.check_connected()?;
        self.inner.history(key).await
    }
}

struct FaultyObjects {
    inner: Arc<dyn ObjectStore>,
    injector: Arc<FaultInjector>,
}

#[async_trait]
impl ObjectStore for FaultyObjects {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(
        &self,
        name: &str,
        reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo> {
        self.injector.check_connected()?;
        self.inner.put(name, reader).await
    }
    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        self.injector.check_connected()?;
        self.inner.get(name).await
    }
    async fn info(&self, name: &str) -> TransportResult<ObjectInfo> {
        self.injector.check_connected()?;
        self.inner.info(name).await
    }
    async fn delete(&self, name: &str) -> TransportResult<()> {
        self.injector.check_connected()?;
        self.inner.delete(name).await
    }
    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        self.injector.check_connected()?;
        self.inner.list().await
    }
}
