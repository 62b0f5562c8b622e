//! The faulty message log: publishes get publish faults, and ephemeral
//! subscriptions get delivery faults (and lose what arrives while down).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::consumer::FaultyConsumer;
use super::injector::FaultInjector;
use super::parked::{Held, Parked};
use super::plan::{DeliveryFault, PublishFault};
use crate::transport::{
    Consumer, ConsumerConfig, Headers, Message, MessageLog, MessageStream, PublishAck,
    StreamConfig, StreamInfo, Subscription, TransportError, TransportResult,
};

pub(super) struct FaultyLog {
    pub(super) inner: Arc<dyn MessageLog>,
    pub(super) injector: Arc<FaultInjector>,
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
        // What arrives while down is lost: decided as it arrives.
        let injector = self.injector.clone();
        let arrived = self
            .inner
            .subscribe_admitting(pattern, Arc::new(move || injector.is_connected()))
            .await?;
        Ok(Box::new(FaultySubscription {
            arrived,
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

    async fn consumer_pending(&self, stream: &str, consumer: &str) -> TransportResult<Option<u64>> {
        self.injector.check_connected()?;
        self.inner.consumer_pending(stream, consumer).await
    }
}

struct FaultySubscription {
    arrived: Subscription,
    injector: Arc<FaultInjector>,
    parked: Parked<Message>,
}

#[async_trait]
impl MessageStream for FaultySubscription {
    // Cancel-safe: every await is on a cancel-safe future (the inner
    // subscription's `next`, cancel-safe by the `MessageStream` contract —
    // a channel `recv` on the in-memory bus and under the default
    // `subscribe_admitting` — or a sleep), and a taken message is parked in
    // `self.parked` before any await.
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
                    let successor = tokio::time::timeout_at(until, self.arrived.next()).await;
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
            let message = self.arrived.next().await?;
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
