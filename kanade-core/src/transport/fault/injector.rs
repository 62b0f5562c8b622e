//! The [`FaultInjector`]: decides each operation's fault (scripted, or
//! drawn from the seeded RNG), records it, and holds the connection switch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::plan::{DeliveryFault, FaultEvent, FaultPlan, FaultRates, PublishFault};
use crate::transport::{TransportError, TransportResult};

/// Decides faults and holds the connection switch; shared by every wrapper
/// of one [`FaultyTransport`](super::FaultyTransport).
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

    pub(super) fn check_connected(&self) -> TransportResult<()> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(TransportError::Disconnected(
                "fault injection: transport is down".into(),
            ))
        }
    }

    pub(super) fn publish_fault(&self, subject: &str) -> Option<PublishFault> {
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

    pub(super) fn delivery_fault(&self, subject: &str) -> Option<DeliveryFault> {
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
