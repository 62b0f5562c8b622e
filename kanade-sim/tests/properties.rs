//! Property-tested fleet simulations: the real backend and real agents on
//! the memory transport, fault schedules generated (and shrunk) by
//! proptest, paused tokio time. `PROPTEST_CASES` raises the case count for
//! long runs (default 256). A failing case prints the shrunk schedule and
//! the seed; replay it with `FleetPlan::commands(AGENTS, COMMANDS, seed,
//! schedule)`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Duration;

use kanade_sim::{schedule_strategy, simulate, Fault, FaultSchedule, FleetPlan, NetworkRates};
use proptest::prelude::*;

const AGENTS: usize = 4;
/// Two rounds of the six sim jobs.
const COMMANDS: usize = 12;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn run(seed: u64, schedule: &FaultSchedule) -> kanade_sim::FleetOutcome {
    simulate(FleetPlan::commands(
        AGENTS,
        COMMANDS,
        seed,
        schedule.clone(),
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_property_holds_under_generated_faults(
        seed in any::<u64>(),
        schedule in schedule_strategy(AGENTS, Duration::from_secs(130), 5),
    ) {
        let outcome = run(seed, &schedule);
        let (violations, _) = outcome.check();
        prop_assert!(violations.is_empty(), "{}", outcome.report(&violations));
    }
}

fn sample_schedule() -> FaultSchedule {
    FaultSchedule {
        faults: vec![
            Fault::Partition {
                at: Duration::from_secs(12),
                pc: 1,
                for_: Duration::from_secs(25),
            },
            Fault::CrashRestart {
                at: Duration::from_secs(30),
                pc: 3,
            },
            Fault::BrokerRestart {
                at: Duration::from_secs(45),
                for_: Duration::from_secs(4),
            },
        ],
        network: NetworkRates {
            drop: 20,
            duplicate: 20,
            delay: 20,
            reorder: 20,
            max_delay: Duration::from_secs(1),
        },
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let schedule = sample_schedule();
    let first = run(42, &schedule);
    let second = run(42, &schedule);
    println!("schedule:\n{schedule}\ntrace hash {}", first.trace_hash);
    if first.trace != second.trace {
        let at = first
            .trace
            .iter()
            .zip(&second.trace)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.len().min(second.trace.len()));
        panic!(
            "traces differ at line {at}: {:?} vs {:?}",
            first.trace.get(at),
            second.trace.get(at)
        );
    }
    assert_eq!(first.trace_hash, second.trace_hash);
    let (violations, tally) = first.check();
    assert!(violations.is_empty(), "{}", first.report(&violations));
    assert!(tally.delivered >= AGENTS * (COMMANDS - 2), "{tally:?}");
    let other = run(43, &schedule);
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "another seed, another trace"
    );
}

#[test]
fn debug_dump() {
    let outcome = run(42, &sample_schedule());
    let (violations, tally) = outcome.check();
    println!(
        "{tally:?} {:?} invocations {} events {}",
        outcome.messages,
        outcome.invocations.len(),
        outcome.events()
    );
    for e in &outcome.executions {
        println!("{e:?}");
    }
    for line in outcome
        .trace
        .iter()
        .filter(|l| !l.contains("heartbeat"))
        .take(150)
    {
        println!("{line}");
    }
    println!("{}", outcome.report(&violations));
}
