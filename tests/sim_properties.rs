//! Property-tested fleet simulations: the real backend and real agents on
//! the memory transport, fault schedules generated (and shrunk) by
//! proptest, paused tokio time. `PROPTEST_CASES` raises the case count for
//! long runs (default 256). A failing case prints the shrunk schedule and
//! the seed; replay it with `FleetPlan::commands(AGENTS, COMMANDS, seed,
//! schedule)`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Duration;

use kanade::sim::{schedule_strategy, simulate, Fault, FaultSchedule, FleetPlan, NetworkRates};
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

fn run(seed: u64, schedule: &FaultSchedule) -> kanade::sim::FleetOutcome {
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

/// Shrunk cases that failed once, kept as regressions. The first is from
/// a 3,000-case run: two commands published in the same instant (the
/// operator retried through a broker outage) while one agent's live
/// delivery was dropped — the check's exposure window was empty and
/// blamed the fleet for a supersede EXEC is designed to do; the window now
/// includes both ends. The second (1,500-case run) found an agent bug: a
/// command handler still in flight when the agent crashed started the
/// command after the crash, while the restarted agent resumed it from the
/// ledger — the same request ran twice. A stopped or halted agent now
/// starts nothing (the ledger keeps the command for the next start). It
/// showed while the backend's database calls ran on blocking threads; the
/// simulation now runs them inline (fixed order), so the focused agent test
/// `a_command_arriving_as_the_agent_crashes_runs_once` pins it. The
/// others found agent bugs in the first version of
/// the simulation: a command delivered as the link dropped waited out a
/// 60 s ack wait and was superseded (ack wait now 5 s); an agent restarted
/// while offline never subscribed (subscriptions now retry).
#[test]
fn regressions_found_by_the_simulation() {
    let secs = Duration::from_secs;
    let cases = [
        (
            5008527323731444144,
            FaultSchedule {
                faults: vec![
                    Fault::BrokerRestart {
                        at: secs(2),
                        for_: secs(10),
                    },
                    Fault::BrokerRestart {
                        at: secs(4),
                        for_: secs(15),
                    },
                    Fault::BrokerRestart {
                        at: secs(73),
                        for_: secs(9),
                    },
                    Fault::Partition {
                        at: secs(91),
                        pc: 0,
                        for_: secs(21),
                    },
                    Fault::Partition {
                        at: secs(69),
                        pc: 3,
                        for_: secs(44),
                    },
                ],
                network: NetworkRates {
                    drop: 20,
                    duplicate: 2,
                    delay: 10,
                    reorder: 0,
                    max_delay: Duration::from_millis(1994),
                },
            },
        ),
        (
            0,
            FaultSchedule::new(vec![Fault::Partition {
                at: secs(3),
                pc: 0,
                for_: secs(8),
            }]),
        ),
        (
            0,
            FaultSchedule::new(vec![
                Fault::Partition {
                    at: secs(25),
                    pc: 3,
                    for_: secs(7),
                },
                Fault::CrashRestart {
                    at: secs(25),
                    pc: 3,
                },
            ]),
        ),
        (
            16897839790479000020,
            FaultSchedule {
                faults: vec![Fault::CrashRestart { at: secs(5), pc: 1 }],
                network: NetworkRates {
                    drop: 29,
                    duplicate: 16,
                    delay: 20,
                    reorder: 9,
                    max_delay: Duration::from_millis(578),
                },
            },
        ),
        // Found by CI: a kill lost on the way (2 % of deliveries dropped)
        // while an agent waited out its jitter let it start the run after
        // the kill; after a wait the agent now asks the kill record itself.
        // (Later changes moved the trace; kept as a lossy schedule with kills.)
        (
            4598143178688342832,
            FaultSchedule {
                faults: vec![Fault::BrokerRestart {
                    at: secs(0),
                    for_: secs(1),
                }],
                network: NetworkRates {
                    drop: 21,
                    duplicate: 0,
                    delay: 0,
                    reorder: 0,
                    max_delay: Duration::from_millis(1),
                },
            },
        ),
        // Found by CI: a command fired while every heartbeat was stale
        // (an 18 s broker outage) counted no targets and was "completed" at
        // once; its kill was then refused as finished while agents still
        // ran it. A fleet-wide execution's kill is now recorded anyway.
        (
            0,
            FaultSchedule::new(vec![
                Fault::BrokerRestart {
                    at: secs(0),
                    for_: secs(1),
                },
                Fault::BrokerRestart {
                    at: secs(11),
                    for_: secs(18),
                },
            ]),
        ),
        // A brand-new agent cut off from its first start until after two
        // fleet-wide commands went out: it registered late, yet they were
        // sent after it started, so it must run them (issue 23, item 2).
        (
            7408356326091,
            FaultSchedule::new(vec![Fault::Partition {
                at: secs(0),
                pc: 0,
                for_: secs(16),
            }]),
        ),
    ];
    for (seed, schedule) in cases {
        let outcome = run(seed, &schedule);
        let (violations, tally) = outcome.check();
        assert!(violations.is_empty(), "{}", outcome.report(&violations));
        assert!(tally.delivered > AGENTS * COMMANDS / 2, "{tally:?}");
    }
}

/// Found by CI: a command revoked while its agent waited out its jitter;
/// the agent then crashed and restarted while the broker was down (7 s),
/// resumed the command from its ledger and ran it, its revoke gate
/// reading an empty view of the script statuses. No command now starts
/// before the agent has read the KV state in this process: the resumed
/// one waits for the broker, sees the revoke and is skipped with 126.
#[test]
fn a_command_revoked_before_an_offline_restart_never_runs() {
    let secs = Duration::from_secs;
    let schedule = FaultSchedule::new(vec![
        Fault::BrokerRestart {
            at: secs(121),
            for_: secs(7),
        },
        Fault::CrashRestart {
            at: secs(125),
            pc: 2,
        },
    ]);
    let outcome = run(5230007962502972447, &schedule);
    let (violations, _) = outcome.check();
    assert!(violations.is_empty(), "{}", outcome.report(&violations));
    let revoked = outcome
        .results
        .get("sim-000023")
        .and_then(|rows| rows.iter().find(|r| r.pc_id == "pc-0002"))
        .unwrap_or_else(|| {
            panic!(
                "no result for sim-000023 on pc-0002:\n{}",
                outcome.report(&violations)
            )
        });
    assert_eq!(
        (revoked.exit_code, revoked.skipped),
        (126, true),
        "{}",
        revoked.stderr
    );
}

/// The fleet-day workload of `sim_fleet`, small: the backend's scheduler
/// fires the hourly job, random faults from the seed, every property holds.
#[test]
fn a_scheduled_fleet_day_keeps_every_property() {
    for seed in [1, 2, 3] {
        let hours = 3;
        let faults = FaultSchedule::random(seed, 20, Duration::from_secs(hours * 3600), 30);
        let outcome = simulate(FleetPlan::fleet_day(20, hours, seed, faults)).unwrap();
        let (violations, tally) = outcome.check();
        assert!(violations.is_empty(), "{}", outcome.report(&violations));
        assert!(
            outcome.executions.len() >= hours as usize,
            "{:?}",
            outcome.executions.len()
        );
        assert!(
            tally.delivered >= 20 * hours as usize - tally.superseded,
            "{tally:?}"
        );
        println!(
            "seed {seed}: {tally:?}, {} events, trace {}",
            outcome.events(),
            outcome.trace_hash
        );
    }
}

#[test]
fn forged_commands_never_run_on_enforcing_agents() {
    // Every simulated agent enforces signatures; the backend signs. An
    // attacker on the bus publishes unsigned and mis-signed commands, some
    // while an agent is cut off (it replays nothing forged either).
    let secs = Duration::from_secs;
    let schedule = FaultSchedule {
        faults: vec![
            Fault::Forge { at: secs(3) },
            Fault::Partition {
                at: secs(10),
                pc: 1,
                for_: secs(20),
            },
            Fault::Forge { at: secs(15) },
            Fault::CrashRestart {
                at: secs(40),
                pc: 2,
            },
            Fault::Forge { at: secs(41) },
        ],
        network: NetworkRates::default(),
    };
    println!("{schedule}");
    let outcome = run(11, &schedule);
    let (violations, tally) = outcome.check();
    assert!(violations.is_empty(), "{}", outcome.report(&violations));
    assert!(tally.delivered > 0);
    let refusals = outcome
        .trace
        .iter()
        .filter(|line| line.contains("forged-") && line.contains("exit 123"))
        .count();
    assert!(
        refusals >= 6,
        "enforcing agents answered the forged commands with 123:\n{}",
        outcome.trace.join("\n")
    );
    assert!(
        !outcome
            .invocations
            .iter()
            .any(|i| i.request_id.starts_with("forged-")),
        "nothing forged ran"
    );
}

/// Case 1 of the reliability issue in the simulation: agents cut off across
/// a kill (a partition, a crash-restart) and back before the next command
/// supersedes the killed one in EXEC replay it — and never start it: no run
/// begins after the kill was acknowledged, and the partitioned agent
/// reports -1 "killed before start".
#[test]
fn a_kill_reaches_agents_that_were_offline() {
    let secs = Duration::from_secs;
    // The killed command is the third: fired at 25 s, killed at 30 s, the
    // next command fired at 35 s.
    let schedule = FaultSchedule {
        faults: vec![
            Fault::Partition {
                at: secs(20),
                pc: 1,
                for_: secs(12),
            },
            Fault::Partition {
                at: secs(24),
                pc: 2,
                for_: secs(9),
            },
        ],
        network: NetworkRates::default(),
    };
    for seed in [1, 2, 3] {
        let outcome = run(seed, &schedule);
        let (violations, _) = outcome.check();
        assert!(violations.is_empty(), "{}", outcome.report(&violations));
        let killed = outcome
            .executions
            .iter()
            .filter(|e| e.job_id == "sim-killed")
            .min_by_key(|e| e.created_at.clone())
            .unwrap();
        let results = &outcome.results[&killed.exec_id];
        for pc in ["pc-0001", "pc-0002"] {
            let row = results.iter().find(|r| r.pc_id == pc).unwrap();
            assert_eq!((row.exit_code, row.skipped), (-1, false), "{row:?}");
            assert!(row.stderr.contains("killed before start"), "{row:?}");
        }
        assert!(
            !outcome
                .invocations
                .iter()
                .any(|i| i.request_id == killed.request_id
                    && (i.pc == "pc-0001" || i.pc == "pc-0002")),
            "nothing ran on the agents that were away"
        );
    }
}

/// Case 9 of the reliability issue in the simulation: agents whose clocks
/// are minutes to an hour off (seeded steps) keep every property — online
/// by the backend's receive time, the past-deadline job skipped with 125
/// on every clock — and the backend records each one's offset.
#[test]
fn agents_with_skewed_clocks_keep_every_property() {
    let secs = Duration::from_secs;
    let schedule = FaultSchedule {
        faults: vec![
            Fault::ClockStep {
                at: secs(0),
                pc: 0,
                offset_secs: 600,
            },
            Fault::ClockStep {
                at: secs(0),
                pc: 1,
                offset_secs: -240,
            },
            Fault::ClockStep {
                at: secs(0),
                pc: 2,
                offset_secs: 3600,
            },
            // A step mid-run, and an agent cut off across a fire.
            Fault::ClockStep {
                at: secs(40),
                pc: 3,
                offset_secs: -200,
            },
            Fault::Partition {
                at: secs(30),
                pc: 1,
                for_: secs(4),
            },
        ],
        network: NetworkRates::default(),
    };
    for seed in [1, 2, 3] {
        let outcome = run(seed, &schedule);
        let (violations, tally) = outcome.check();
        assert!(violations.is_empty(), "{}", outcome.report(&violations));
        assert!(tally.delivered >= AGENTS * (COMMANDS - 2), "{tally:?}");
        for late in outcome.executions.iter().filter(|e| e.job_id == "sim-late") {
            for row in &outcome.results[&late.exec_id] {
                assert_eq!((row.exit_code, row.skipped), (125, true), "{row:?}");
            }
        }
    }
    // And in a fleet-day, where presence decides targeting: every agent
    // stays online and answers every hourly fire.
    let day = FaultSchedule::new(vec![
        Fault::ClockStep {
            at: secs(0),
            pc: 0,
            offset_secs: -240,
        },
        Fault::ClockStep {
            at: secs(0),
            pc: 1,
            offset_secs: 3600,
        },
    ]);
    let outcome = simulate(FleetPlan::fleet_day(4, 2, 7, day)).unwrap();
    let (violations, tally) = outcome.check();
    assert!(violations.is_empty(), "{}", outcome.report(&violations));
    assert_eq!(tally.superseded, 0, "{tally:?}");
    assert!(tally.delivered >= 4 * 2, "{tally:?}");
}
