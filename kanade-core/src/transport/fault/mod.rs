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
//!
//! The layer is split by concern: `plan` holds the fault vocabulary
//! (what can go wrong and where faults come from), `injector` decides
//! faults and holds the connection switch, and the wrappers — `transport`,
//! `log`, `consumer` and `store` — apply them to each part of the contract,
//! parking held messages in `parked`.
//!
//! [`Transport`]: crate::transport::Transport
//! [`TransportError::Disconnected`]: crate::transport::TransportError::Disconnected

mod consumer;
mod injector;
mod log;
mod parked;
mod plan;
mod store;
mod transport;

pub use injector::FaultInjector;
pub use plan::{DeliveryFault, FaultEvent, FaultPlan, FaultRates, PublishFault};
pub use transport::FaultyTransport;
