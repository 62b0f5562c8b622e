//! A simulated rollout of a bad version: the real backend's rollout driver
//! and N real agents on the in-memory bus, on paused tokio time. The job
//! fails on a seeded share of the hosts; the rollout has a batch and an
//! error budget. Prints how many hosts ran the bad version before the
//! halt (and how many beyond the budget's own sample), the halt reason,
//! and the wall time; then checks the rollout properties.
//!
//! ```text
//! cargo run --release --example sim_rollout -- --agents 10000 --batch 5% --max-errors 2% --failing 10
//! ```

use clap::Parser;
use kanade::backend::rollout::spec::{AmountSpec, RolloutSpec};
use kanade::sim::{simulate, FaultSchedule, FleetPlan};

/// Simulate one rollout of a bad version.
#[derive(Parser)]
struct Args {
    /// Agents in the fleet.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Targets per step (count or share).
    #[arg(long, default_value = "5%")]
    batch: String,
    /// The error budget (count or share).
    #[arg(long, default_value = "2%")]
    max_errors: String,
    /// Results before a percentage budget is judged.
    #[arg(long, default_value_t = 10)]
    min_sample: u64,
    /// Percent of hosts the version fails on.
    #[arg(long, default_value_t = 10)]
    failing: u32,
    /// Seed of every random choice (and of which hosts fail).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn amount(text: &str) -> AmountSpec {
    text.parse::<u64>()
        .map(AmountSpec::Count)
        .unwrap_or_else(|_| AmountSpec::Text(text.to_owned()))
}

fn main() {
    let args = Args::parse();
    let rollout = RolloutSpec {
        batch: Some(amount(&args.batch)),
        max_errors: Some(amount(&args.max_errors)),
        min_sample: Some(args.min_sample),
        ..RolloutSpec::default()
    };
    println!(
        "simulating a rollout on {} agents: batch {}, max_errors {}, min_sample {}, the version failing on {}% (seed {})",
        args.agents, args.batch, args.max_errors, args.min_sample, args.failing, args.seed
    );
    let mut plan = FleetPlan::rollout(
        args.agents,
        args.seed,
        FaultSchedule::default(),
        rollout,
        args.failing,
    );
    plan.keep_trace = false;
    let outcome = match simulate(plan) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let Some(record) = outcome.rollouts.first() else {
        eprintln!("no rollout was recorded");
        std::process::exit(1);
    };
    let execution = outcome
        .executions
        .iter()
        .find(|e| e.exec_id == record.row.exec_id);
    let ran = outcome
        .invocations
        .iter()
        .filter(|i| execution.is_some_and(|e| e.request_id == i.request_id))
        .count();
    let beyond = ran.saturating_sub(args.min_sample as usize);
    println!("state              {}", record.row.state);
    if let Some(reason) = &record.row.reason {
        println!("halt reason        {reason}");
    }
    println!(
        "targets            {} (dispatched {})",
        record.targets.len(),
        record.dispatched()
    );
    println!(
        "ran the version    {ran} hosts ({:.2}% of the fleet), {} of them failed",
        100.0 * ran as f64 / args.agents.max(1) as f64,
        record.failed()
    );
    if record.row.state == "halted" {
        println!(
            "beyond the sample  {beyond} hosts ({:.2}% of the fleet; goal: under 1%)",
            100.0 * beyond as f64 / args.agents.max(1) as f64
        );
    }
    println!("simulated          {:?}", outcome.simulated);
    println!("wall time          {:.2} s", outcome.wall.as_secs_f64());
    let (violations, _) = outcome.check();
    println!("properties         {} violations", violations.len());
    if !violations.is_empty() {
        eprintln!("{}", outcome.report(&violations));
        std::process::exit(1);
    }
}
