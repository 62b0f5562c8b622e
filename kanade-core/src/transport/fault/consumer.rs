//! The faulty durable consumer: deliveries get delivery faults, and acks
//! and naks fail while the transport is down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::injector::FaultInjector;
use super::parked::{Held, Parked};
use super::plan::DeliveryFault;
use crate::transport::{AckHandle, Consumer, Delivery, TransportResult};

pub(super) struct FaultyConsumer {
    pub(super) inner: Arc<dyn Consumer>,
    pub(super) injector: Arc<FaultInjector>,
    /// Also serialises `next()` calls on this handle.
    pub(super) parked: tokio::sync::Mutex<Parked<Delivery>>,
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
