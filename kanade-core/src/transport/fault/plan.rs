//! The fault vocabulary: the faults a publish or a delivery can get,
//! the seeded rates or script they come from, and the recorded events.

use std::time::Duration;

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
