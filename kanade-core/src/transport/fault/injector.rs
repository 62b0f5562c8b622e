//! The [`FaultInjector`]: decides each operation's fault (scripted, or
//! drawn from the seeded RNG), records it, and holds the connection switch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::plan::{DeliveryFault, FaultEvent, FaultPlan, FaultRates, PublishFault};
use crate::transport::{TransportError, TransportResult};

/// Decides faults and holds the connection switch; shared by every wrapper
/// of one [`FaultyTransport`](super::FaultyTransport).
///
/// Laid out for a fleet of thousands in one process, where each operation
/// of an agent finds its injector cold in memory: the switch, the lock,
/// the RNG and the counters come first, in the allocation's first 64-byte
/// cache line with the `Arc`'s counters (an alignment of 64 instead put
/// the counters on a line of their own: more misses), and a
/// random plan's thresholds are shared by every injector with the same
/// rates ([`Thresholds::shared`]), so a decision loads one line of its own
/// instead of three or four.
#[derive(Debug)]
#[repr(C)]
pub struct FaultInjector {
    down: AtomicBool,
    state: Mutex<InjectorState>,
}

#[derive(Debug)]
#[repr(C)]
struct InjectorState {
    rng: fastrand::Rng,
    publishes: usize,
    deliveries: usize,
    /// A random plan's thresholds (`None` for a scripted plan).
    thresholds: Option<Arc<Thresholds>>,
    plan: FaultPlan,
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
            down: AtomicBool::new(false),
            state: Mutex::new(InjectorState {
                rng: fastrand::Rng::with_seed(seed),
                publishes: 0,
                deliveries: 0,
                thresholds: Thresholds::of(&plan),
                plan,
                events: Vec::new(),
            }),
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
        state.thresholds = Thresholds::of(&plan);
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
            |thresholds| &thresholds.publish,
            |index, delay| {
                [
                    PublishFault::Drop,
                    PublishFault::LoseAck,
                    PublishFault::Duplicate,
                    PublishFault::Delay(delay),
                ][index]
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
            |thresholds| &thresholds.delivery,
            |index, delay| {
                [
                    DeliveryFault::Drop,
                    DeliveryFault::Duplicate,
                    DeliveryFault::Delay(delay),
                    DeliveryFault::Reorder,
                ][index]
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
        cumulative: fn(&Thresholds) -> &[f64; 4],
        fault_at: fn(usize, Duration) -> F,
        event: fn(String, F) -> FaultEvent,
    ) -> Option<F> {
        let mut guard = self.state();
        let state = &mut *guard;
        let index = {
            let count = counter(state);
            *count += 1;
            *count - 1
        };
        let fault = match &state.thresholds {
            Some(thresholds) => {
                let delay = random_delay(&mut state.rng, thresholds.max_delay);
                pick(&mut state.rng, cumulative(thresholds)).map(|at| fault_at(at, delay))
            }
            None => scripted(&state.plan).and_then(|script| script.get(index).copied().flatten()),
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

/// A random plan's fault thresholds: for each kind of operation, the
/// cumulative probabilities of its four faults (each rate clamped to
/// 0.0..=1.0 and added in order, as [`pick`] compares them), and the
/// longest delay. Immutable; shared by injectors with equal rates.
#[derive(Debug)]
struct Thresholds {
    publish: [f64; 4],
    delivery: [f64; 4],
    max_delay: Duration,
}

impl Thresholds {
    /// A random plan's thresholds (shared, see [`Thresholds::shared`]);
    /// `None` for a scripted plan.
    fn of(plan: &FaultPlan) -> Option<Arc<Self>> {
        match plan {
            FaultPlan::Random(rates) => Some(Self::shared(Self::from_rates(rates))),
            FaultPlan::Scripted { .. } => None,
        }
    }

    fn from_rates(rates: &FaultRates) -> Self {
        Self {
            publish: cumulative([
                rates.drop_publish,
                rates.lose_ack,
                rates.duplicate_publish,
                rates.delay_publish,
            ]),
            delivery: cumulative([
                rates.drop_delivery,
                rates.duplicate_delivery,
                rates.delay_delivery,
                rates.reorder_delivery,
            ]),
            max_delay: rates.max_delay,
        }
    }

    /// One copy per distinct set of thresholds in the process: a
    /// simulated fleet's thousands of injectors (their seeds differ, their
    /// rates do not) then read one set that stays in the cache. Sets no
    /// injector holds any more are dropped as new ones come.
    fn shared(thresholds: Self) -> Arc<Self> {
        static KNOWN: Mutex<Vec<std::sync::Weak<Thresholds>>> = Mutex::new(Vec::new());
        let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|weak| weak.strong_count() > 0);
        let key = thresholds.key();
        if let Some(found) = known
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|t| t.key() == key)
        {
            return found;
        }
        let made = Arc::new(thresholds);
        known.push(Arc::downgrade(&made));
        made
    }

    /// What makes two sets the same: their bits (a NaN rate equals itself).
    fn key(&self) -> ([u64; 4], [u64; 4], Duration) {
        (
            self.publish.map(f64::to_bits),
            self.delivery.map(f64::to_bits),
            self.max_delay,
        )
    }
}

/// Running sums of `rates`, each clamped to 0.0..=1.0 (NaN stays NaN).
fn cumulative(rates: [f64; 4]) -> [f64; 4] {
    let mut sum = 0.0;
    rates.map(|p| {
        sum += p.clamp(0.0, 1.0);
        sum
    })
}

/// Draws one uniform number and picks the first fault whose cumulative
/// probability covers it: its index.
fn pick(rng: &mut fastrand::Rng, cumulative: &[f64; 4]) -> Option<usize> {
    let roll = rng.f64();
    cumulative.iter().position(|&up_to| roll < up_to)
}

fn random_delay(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    Duration::from_micros(rng.u64(0..=max.as_micros() as u64))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The draw as the rates give it, one by one: a delay, then the first
    /// fault whose running sum of clamped rates covers one uniform roll.
    fn reference_draw(rng: &mut fastrand::Rng, rates: [f64; 4], max: Duration) -> Option<usize> {
        let _delay = random_delay(rng, max);
        let roll = rng.f64();
        let mut sum = 0.0;
        for (index, p) in rates.into_iter().enumerate() {
            sum += p.clamp(0.0, 1.0);
            if roll < sum {
                return Some(index);
            }
        }
        None
    }

    fn rates(seed: u64, publish: [f64; 4], delivery: [f64; 4]) -> FaultRates {
        FaultRates {
            seed,
            drop_publish: publish[0],
            lose_ack: publish[1],
            duplicate_publish: publish[2],
            delay_publish: publish[3],
            drop_delivery: delivery[0],
            duplicate_delivery: delivery[1],
            delay_delivery: delivery[2],
            reorder_delivery: delivery[3],
            max_delay: Duration::from_millis(40),
        }
    }

    fn rate() -> impl Strategy<Value = f64> {
        prop_oneof![0.0..0.5f64, -0.2..1.3f64, Just(f64::NAN), Just(0.0)]
    }

    fn index_of_publish(fault: PublishFault) -> usize {
        match fault {
            PublishFault::Drop => 0,
            PublishFault::LoseAck => 1,
            PublishFault::Duplicate => 2,
            PublishFault::Delay(_) => 3,
        }
    }

    fn index_of_delivery(fault: DeliveryFault) -> usize {
        match fault {
            DeliveryFault::Drop => 0,
            DeliveryFault::Duplicate => 1,
            DeliveryFault::Delay(_) => 2,
            DeliveryFault::Reorder => 3,
        }
    }

    proptest! {
        /// Precomputed thresholds decide exactly what the rates decide one
        /// by one, from the same seed, for rates out of range and NaN too:
        /// a simulation's trace does not depend on how they are kept.
        #[test]
        fn thresholds_decide_as_the_rates_do(
            seed in any::<u64>(),
            publish in proptest::array::uniform4(rate()),
            delivery in proptest::array::uniform4(rate()),
            kinds in proptest::collection::vec(any::<bool>(), 1..200),
        ) {
            let injector = FaultInjector::new(FaultPlan::Random(rates(seed, publish, delivery)));
            let mut rng = fastrand::Rng::with_seed(seed);
            let max = Duration::from_millis(40);
            for is_publish in kinds {
                if is_publish {
                    let expected = reference_draw(&mut rng, publish, max);
                    let got = injector.publish_fault("s").map(index_of_publish);
                    prop_assert_eq!(got, expected);
                } else {
                    let expected = reference_draw(&mut rng, delivery, max);
                    let got = injector.delivery_fault("s").map(index_of_delivery);
                    prop_assert_eq!(got, expected);
                }
            }
        }
    }

    fn thresholds(injector: &FaultInjector) -> Option<Arc<Thresholds>> {
        injector.state().thresholds.clone()
    }

    /// Injectors whose rates are equal share one set of thresholds, whatever
    /// their seeds; other rates, or a new plan, get their own.
    #[test]
    fn equal_rates_share_one_set_of_thresholds() {
        let calm = [0.01, 0.0, 0.02, 0.0];
        let a = FaultInjector::new(FaultPlan::Random(rates(1, calm, calm)));
        let b = FaultInjector::new(FaultPlan::Random(rates(2, calm, calm)));
        let other = FaultInjector::new(FaultPlan::Random(rates(1, calm, [0.5; 4])));
        let (a_t, b_t, other_t) = (
            thresholds(&a).expect("random"),
            thresholds(&b).expect("random"),
            thresholds(&other).expect("random"),
        );
        assert!(Arc::ptr_eq(&a_t, &b_t));
        assert!(!Arc::ptr_eq(&a_t, &other_t));
        b.set_plan(FaultPlan::Random(rates(2, calm, [0.5; 4])));
        assert!(Arc::ptr_eq(&thresholds(&b).expect("random"), &other_t));
        b.set_plan(FaultPlan::Scripted {
            publishes: vec![Some(PublishFault::Drop)],
            deliveries: Vec::new(),
        });
        assert!(thresholds(&b).is_none());
        assert_eq!(b.publish_fault("s"), Some(PublishFault::Drop));
        assert_eq!(b.publish_fault("s"), None);
    }

    /// What every operation reads (the switch, the lock, the RNG, the
    /// counters, the thresholds' pointer) fits 48 bytes: with the `Arc`'s
    /// two counters before it, the first 64-byte line of the allocation
    /// (mimalloc's 192-byte blocks, this size, start on a line).
    #[test]
    fn the_hot_fields_share_one_cache_line() {
        assert_eq!(std::mem::offset_of!(FaultInjector, down), 0);
        let injector = FaultInjector::new(FaultPlan::Random(FaultRates::none(1)));
        let start = std::ptr::from_ref::<FaultInjector>(&injector) as usize;
        // Where the lock keeps its data (std puts its word first).
        let data = std::ptr::from_ref::<InjectorState>(&injector.state()) as usize - start;
        let hot_end = data
            + std::mem::offset_of!(InjectorState, thresholds)
            + std::mem::size_of::<Option<Arc<Thresholds>>>();
        assert!(hot_end <= 48, "hot fields end at byte {hot_end}");
    }
}
