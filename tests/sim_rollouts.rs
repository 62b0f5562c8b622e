//! Rollouts in the deterministic fleet simulation (DESIGN §11): the real
//! backend's rollout driver and real agents on the memory transport, under
//! generated fault schedules with partitions, crashes, clock steps, broker
//! and backend restarts. The properties (`FleetOutcome::check`, which
//! includes `check_rollouts`): never more runs at once than the window,
//! each target run at most once, nothing dispatched after a halt, a halt
//! justified and on the breaching result, and without a halt every target
//! answered once or (cut off at its turn) shown unreached. A seeded
//! failure rate above the budget halts; one below completes.
//! `PROPTEST_CASES` raises the case count (default 32).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Duration;

use kanade::backend::rollout::spec::RolloutSpec;
use kanade::core::policy::exit_codes;
use kanade::sim::{rollout_schedule_strategy, simulate, FaultSchedule, FleetPlan};
use proptest::prelude::*;

const AGENTS: usize = 8;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn spec(json: &str) -> RolloutSpec {
    serde_json::from_str(json).unwrap()
}

fn run(
    agents: usize,
    seed: u64,
    schedule: FaultSchedule,
    rollout: &str,
    failing: u32,
) -> kanade::sim::FleetOutcome {
    simulate(FleetPlan::rollout(
        agents,
        seed,
        schedule,
        spec(rollout),
        failing,
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn rollout_properties_hold_under_generated_faults(
        seed in any::<u64>(),
        failing in prop_oneof![Just(0u32), 0u32..60],
        schedule in rollout_schedule_strategy(AGENTS, Duration::from_secs(120), 5),
    ) {
        let outcome = run(
            AGENTS,
            seed,
            schedule,
            r#"{"batch": 2, "max_concurrency": 3, "max_errors": "30%", "min_sample": 4}"#,
            failing,
        );
        let (violations, _) = outcome.check();
        prop_assert!(violations.is_empty(), "{}", outcome.report(&violations));
        prop_assert_eq!(outcome.rollouts.len(), 1);
        let record = &outcome.rollouts[0];
        prop_assert!(
            matches!(record.row.state.as_str(), "completed" | "halted"),
            "{:?}", record.row
        );
        if failing == 0 {
            // No script fails, so the only errors are runs a crash cut
            // short: the agent reports them on restart as exit 121, a
            // failure (DESIGN's exit-code table), and they count against
            // the budget — a rollout whose hosts go down mid-run should
            // halt. Without one, the rollout completes.
            let results: Vec<_> = outcome.results.values().flatten().collect();
            for result in &results {
                prop_assert!(
                    result.skipped
                        || result.exit_code == 0
                        || result.exit_code == i64::from(exit_codes::AGENT_RESTARTED),
                    "{result:?}"
                );
            }
            let restarted = i64::from(exit_codes::AGENT_RESTARTED);
            if !results.iter().any(|r| r.exit_code == restarted) {
                prop_assert_eq!(record.row.state.as_str(), "completed");
            }
        }
    }
}

#[test]
fn a_failure_rate_above_the_budget_halts_one_below_completes() {
    let rollout = r#"{"batch": 4, "max_errors": "10%", "min_sample": 5}"#;
    let above = run(40, 3, FaultSchedule::default(), rollout, 40);
    let (violations, _) = above.check();
    assert!(violations.is_empty(), "{}", above.report(&violations));
    let halted = &above.rollouts[0];
    assert_eq!(halted.row.state, "halted", "{:?}", halted.row);
    assert!(
        halted.dispatched() < 40,
        "the halt stopped dispatch: {} of 40 went out",
        halted.dispatched()
    );
    println!(
        "40% failing, budget 10%: halted ({}) after {} of 40 dispatched",
        halted.row.reason.as_deref().unwrap_or(""),
        halted.dispatched()
    );

    let below = run(40, 3, FaultSchedule::default(), rollout, 3);
    let (violations, _) = below.check();
    assert!(violations.is_empty(), "{}", below.report(&violations));
    let completed = &below.rollouts[0];
    assert_eq!(completed.row.state, "completed", "{:?}", completed.row);
    assert_eq!(completed.dispatched(), 40);
    assert!(completed.failed() <= 4, "{}", completed.failed());
    println!(
        "3% failing, budget 10%: completed with {} failed of 40",
        completed.failed()
    );
}

#[test]
fn the_same_seed_gives_the_same_rollout() {
    let go = || {
        run(
            8,
            11,
            FaultSchedule::default(),
            r#"{"batch": 2, "max_errors": 1}"#,
            30,
        )
    };
    let (a, b) = (go(), go());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.rollouts, b.rollouts);
}
