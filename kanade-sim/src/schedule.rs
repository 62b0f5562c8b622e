//! Fault schedules a human can read: timed faults (partition, crash-restart,
//! broker restart) plus network rates (drop / duplicate / delay / reorder)
//! that hold until the faults end. Built by hand, drawn from a seed for long
//! runs ([`FaultSchedule::random`]), or generated and shrunk by proptest
//! ([`schedule_strategy`]).

use std::fmt;
use std::time::Duration;

use kanade_core::transport::fault::FaultRates;
use proptest::prelude::*;

/// Agent names in simulations: `pc-0007`.
pub fn pc_name(index: usize) -> String {
    format!("pc-{index:04}")
}

/// One timed fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut one agent off the network for a while.
    Partition {
        /// When (simulated time from the start).
        at: Duration,
        /// Which agent (index).
        pc: usize,
        /// How long.
        for_: Duration,
    },
    /// Kill one agent as if its process died and start it again at once on
    /// the same state directory.
    CrashRestart {
        /// When.
        at: Duration,
        /// Which agent.
        pc: usize,
    },
    /// The broker goes away for a while: every client (agents and backend)
    /// loses its connection and what plain subscriptions would have
    /// received; streams, buckets and durable consumers survive, as with
    /// JetStream file storage.
    BrokerRestart {
        /// When.
        at: Duration,
        /// How long it is down.
        for_: Duration,
    },
    /// One agent's clock steps to `offset_secs` off the simulated time
    /// (positive: ahead) and stays there. Presence and deadlines must not
    /// care. (Enforcing agents refuse signatures dated more than 5 min in
    /// their future, so a clock behind by more than that refuses every
    /// command: the generated steps stay within −4 min … +1 h.)
    ClockStep {
        /// When.
        at: Duration,
        /// Which agent.
        pc: usize,
        /// The offset, in seconds.
        offset_secs: i64,
    },
    /// The backend's process dies (`kill -9`) and starts again after
    /// `for_` on the same database: its projectors, reaper, rollout driver
    /// and audit publisher stop mid-work and resume from SQLite and the
    /// durable consumers. (The operator's API calls still go through: they
    /// stand for a second backend instance's API.)
    BackendRestart {
        /// When.
        at: Duration,
        /// How long it is down.
        for_: Duration,
    },
    /// An attacker client on the broker publishes forged commands on
    /// `commands.all`: one unsigned, one signed by a key of its own under
    /// the fleet's key id. Enforcing agents must run neither.
    Forge {
        /// When.
        at: Duration,
    },
}

impl Fault {
    /// When the fault starts.
    pub fn at(&self) -> Duration {
        match self {
            Fault::Partition { at, .. }
            | Fault::CrashRestart { at, .. }
            | Fault::BrokerRestart { at, .. }
            | Fault::BackendRestart { at, .. }
            | Fault::ClockStep { at, .. }
            | Fault::Forge { at } => *at,
        }
    }

    /// When the fault is over.
    pub fn ends(&self) -> Duration {
        match self {
            Fault::Partition { at, for_, .. }
            | Fault::BrokerRestart { at, for_ }
            | Fault::BackendRestart { at, for_ } => at.saturating_add(*for_),
            Fault::CrashRestart { at, .. } | Fault::ClockStep { at, .. } | Fault::Forge { at } => {
                *at
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = humantime::format_duration;
        match self {
            Fault::Partition { at, pc, for_ } => write!(
                f,
                "at {}: partition {} for {}",
                time(*at),
                pc_name(*pc),
                time(*for_)
            ),
            Fault::CrashRestart { at, pc } => write!(
                f,
                "at {}: crash-restart {} (state dir kept)",
                time(*at),
                pc_name(*pc)
            ),
            Fault::BrokerRestart { at, for_ } => {
                write!(f, "at {}: broker restart ({} down)", time(*at), time(*for_))
            }
            Fault::BackendRestart { at, for_ } => {
                write!(
                    f,
                    "at {}: backend restart ({} down)",
                    time(*at),
                    time(*for_)
                )
            }
            Fault::ClockStep {
                at,
                pc,
                offset_secs,
            } => write!(
                f,
                "at {}: {}'s clock steps to {offset_secs:+}s off",
                time(*at),
                pc_name(*pc)
            ),
            Fault::Forge { at } => write!(
                f,
                "at {}: forged commands on commands.all (unsigned, mis-signed)",
                time(*at)
            ),
        }
    }
}

/// Per-message fault rates on every agent's link, in per mille (so they
/// shrink as integers). Publishes can be dropped (or lose their ack),
/// duplicated or delayed; deliveries dropped, duplicated, delayed or
/// reordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkRates {
    /// Dropped publishes, lost acks and dropped deliveries (‰ each).
    pub drop: u16,
    /// Duplicated publishes and deliveries (‰).
    pub duplicate: u16,
    /// Delayed publishes and deliveries (‰).
    pub delay: u16,
    /// Reordered deliveries (‰).
    pub reorder: u16,
    /// Longest delay.
    pub max_delay: Duration,
}

impl NetworkRates {
    /// Whether any rate is set.
    pub fn is_calm(&self) -> bool {
        self.drop == 0 && self.duplicate == 0 && self.delay == 0 && self.reorder == 0
    }

    /// The fault layer's rates for one link.
    pub fn to_fault_rates(self, seed: u64) -> FaultRates {
        let p = |permille: u16| f64::from(permille) / 1000.0;
        FaultRates {
            seed,
            drop_publish: p(self.drop),
            lose_ack: p(self.drop),
            duplicate_publish: p(self.duplicate),
            delay_publish: p(self.delay),
            drop_delivery: p(self.drop),
            duplicate_delivery: p(self.duplicate),
            delay_delivery: p(self.delay),
            reorder_delivery: p(self.reorder),
            max_delay: self.max_delay,
        }
    }
}

impl fmt::Display for NetworkRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_calm() {
            return f.write_str("network: calm");
        }
        let pct = |permille: u16| f64::from(permille) / 10.0;
        write!(
            f,
            "network: drop {:.1}%, duplicate {:.1}%, delay {:.1}% (up to {}), reorder {:.1}%",
            pct(self.drop),
            pct(self.duplicate),
            pct(self.delay),
            humantime::format_duration(self.max_delay),
            pct(self.reorder)
        )
    }
}

/// Timed faults plus network rates; printed one fault per line, in time
/// order, then the rates.
///
/// ```
/// use kanade_sim::{Fault, FaultSchedule};
/// use std::time::Duration;
///
/// let schedule = FaultSchedule::new(vec![
///     Fault::CrashRestart { at: Duration::from_secs(30), pc: 3 },
///     Fault::Partition { at: Duration::from_secs(12), pc: 7, for_: Duration::from_secs(90) },
/// ]);
/// assert_eq!(
///     schedule.to_string(),
///     "at 12s: partition pc-0007 for 1m 30s\nat 30s: crash-restart pc-0003 (state dir kept)\nnetwork: calm"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSchedule {
    /// Timed faults (any order).
    pub faults: Vec<Fault>,
    /// Rates on every agent's link until the faults end.
    pub network: NetworkRates,
}

impl FaultSchedule {
    /// Timed faults on a calm network.
    pub fn new(faults: Vec<Fault>) -> Self {
        Self {
            faults,
            network: NetworkRates::default(),
        }
    }

    /// The faults in time order.
    pub fn in_order(&self) -> Vec<Fault> {
        let mut faults = self.faults.clone();
        faults.sort_by_key(Fault::at);
        faults
    }

    /// When the last timed fault is over.
    pub fn last_fault_ends(&self) -> Duration {
        self.faults
            .iter()
            .map(Fault::ends)
            .max()
            .unwrap_or_default()
    }

    /// A seeded schedule for long runs: about `per_hour` faults an hour over
    /// `horizon` on `agents` agents (partitions up to 10 min, crash-restarts,
    /// clock steps of −4 min … +1 h, now and then a broker restart up to
    /// 1 min) and light network rates.
    pub fn random(seed: u64, agents: usize, horizon: Duration, per_hour: u32) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let hours = horizon.as_secs().div_ceil(3600);
        let total = hours * u64::from(per_hour);
        let mut faults = Vec::new();
        for _ in 0..total {
            let at = Duration::from_secs(rng.u64(0..horizon.as_secs().max(1)));
            let pc = rng.usize(0..agents.max(1));
            faults.push(match rng.u8(0..20) {
                0 => Fault::BrokerRestart {
                    at,
                    for_: Duration::from_secs(rng.u64(1..=60)),
                },
                1..=7 => Fault::CrashRestart { at, pc },
                8 => Fault::ClockStep {
                    at,
                    pc,
                    offset_secs: rng.i64(-240..=3600),
                },
                _ => Fault::Partition {
                    at,
                    pc,
                    for_: Duration::from_secs(rng.u64(1..=600)),
                },
            });
        }
        Self {
            faults,
            network: NetworkRates {
                drop: 5,
                duplicate: 5,
                delay: 10,
                reorder: 5,
                max_delay: Duration::from_secs(2),
            },
        }
    }
}

impl fmt::Display for FaultSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for fault in self.in_order() {
            writeln!(f, "{fault}")?;
        }
        write!(f, "{}", self.network)
    }
}

/// One timed fault within `window` on `agents` agents. Partitions and
/// broker restarts shrink towards shorter outages, everything towards
/// earlier times and lower agent numbers.
pub fn fault_strategy(agents: usize, window: Duration) -> impl Strategy<Value = Fault> {
    let window = window.as_secs().max(1);
    let agents = agents.max(1);
    prop_oneof![
        4 => (0..window, 0..agents, 1u64..60).prop_map(|(at, pc, secs)| Fault::Partition {
            at: Duration::from_secs(at),
            pc,
            for_: Duration::from_secs(secs),
        }),
        3 => (0..window, 0..agents).prop_map(|(at, pc)| Fault::CrashRestart {
            at: Duration::from_secs(at),
            pc,
        }),
        1 => (0..window, 1u64..20).prop_map(|(at, secs)| Fault::BrokerRestart {
            at: Duration::from_secs(at),
            for_: Duration::from_secs(secs),
        }),
        1 => (0..window).prop_map(|at| Fault::Forge {
            at: Duration::from_secs(at),
        }),
        2 => (0..window, 0..agents, -240i64..=3600).prop_map(|(at, pc, offset_secs)| Fault::ClockStep {
            at: Duration::from_secs(at),
            pc,
            offset_secs,
        }),
    ]
}

/// One timed fault as [`fault_strategy`] draws them, or a backend restart
/// (down 1–30 s) — the faults a rollout must live through.
pub fn rollout_fault_strategy(agents: usize, window: Duration) -> impl Strategy<Value = Fault> {
    let secs = window.as_secs().max(1);
    prop_oneof![
        4 => fault_strategy(agents, window),
        1 => (0..secs, 1u64..30).prop_map(|(at, down)| Fault::BackendRestart {
            at: Duration::from_secs(at),
            for_: Duration::from_secs(down),
        }),
    ]
}

/// Up to `max_faults` faults of [`rollout_fault_strategy`] within
/// `window`, plus network rates.
pub fn rollout_schedule_strategy(
    agents: usize,
    window: Duration,
    max_faults: usize,
) -> impl Strategy<Value = FaultSchedule> {
    (
        prop::collection::vec(rollout_fault_strategy(agents, window), 0..=max_faults),
        network_strategy(),
    )
        .prop_map(|(faults, network)| FaultSchedule { faults, network })
}

/// Network rates up to 3 % each (half the cases calm), delays up to 2 s.
pub fn network_strategy() -> impl Strategy<Value = NetworkRates> {
    prop_oneof![
        Just(NetworkRates::default()),
        (0u16..=30, 0u16..=30, 0u16..=30, 0u16..=30, 1u64..=2000).prop_map(
            |(drop, duplicate, delay, reorder, max_delay_ms)| NetworkRates {
                drop,
                duplicate,
                delay,
                reorder,
                max_delay: Duration::from_millis(max_delay_ms),
            }
        ),
    ]
}

/// Up to `max_faults` timed faults within `window` plus network rates.
pub fn schedule_strategy(
    agents: usize,
    window: Duration,
    max_faults: usize,
) -> impl Strategy<Value = FaultSchedule> {
    (
        prop::collection::vec(fault_strategy(agents, window), 0..=max_faults),
        network_strategy(),
    )
        .prop_map(|(faults, network)| FaultSchedule { faults, network })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_as_percentages() {
        let rates = NetworkRates {
            drop: 25,
            duplicate: 10,
            delay: 5,
            reorder: 0,
            max_delay: Duration::from_millis(1500),
        };
        assert_eq!(
            rates.to_string(),
            "network: drop 2.5%, duplicate 1.0%, delay 0.5% (up to 1s 500ms), reorder 0.0%"
        );
        assert!((rates.to_fault_rates(1).drop_delivery - 0.025).abs() < 1e-9);
    }

    #[test]
    fn a_random_schedule_depends_only_on_its_seed() {
        let day = Duration::from_secs(24 * 3600);
        let a = FaultSchedule::random(9, 100, day, 4);
        assert_eq!(a, FaultSchedule::random(9, 100, day, 4));
        assert_ne!(a, FaultSchedule::random(10, 100, day, 4));
        assert_eq!(a.faults.len(), 96);
        assert!(a.faults.iter().all(|f| f.at() < day));
    }

    #[test]
    fn broker_restart_reads_well_and_ends() {
        let fault = Fault::BrokerRestart {
            at: Duration::from_secs(45),
            for_: Duration::from_secs(5),
        };
        assert_eq!(fault.to_string(), "at 45s: broker restart (5s down)");
        assert_eq!(fault.ends(), Duration::from_secs(50));
    }
}
