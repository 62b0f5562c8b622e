//! A simulated fleet-day: the real backend (with its scheduler firing an
//! hourly job on every agent) and N real agents on the in-memory bus, with
//! seeded random faults, on paused tokio time. Prints wall time, simulated
//! events and events per wall second, then checks the properties.
//!
//! ```text
//! cargo run --profile sim --example sim_fleet -- --agents 10000 --hours 24
//! ```
//!
//! The `sim` profile is the release profile with fat LTO, one codegen
//! unit and `panic = "abort"` (15 % faster here); `--release` gives the
//! same trace. `scripts/sim-fleet-pgo --agents 10000 --hours 24` builds it
//! profile-guided (trained on a 2,000-agent day) and runs it: 12–15 %
//! faster again, the same trace. It runs itself again at start with
//! mimalloc's purging of freed memory off (`MIMALLOC_PURGE_DELAY=-1`,
//! unless that variable is set): 2–3 % faster at 10,000 agents. While
//! the fleet starts, a second thread faults in the heap the day will grow
//! by and frees it (`--warm-heap-mib`; only while purging is off), so the
//! kernel clears those pages on the other core: 4–5 % faster at 10,000
//! agents (3 pairs).
//!
//! The simulation itself runs on one thread; two helpers take work it
//! need not wait for onto the other core without changing its order: the
//! backend's database thread stores heartbeats
//! (`BackendSettings::database_write_behind`), and the trace is hashed on
//! a thread of its own.

use std::time::Duration;

use clap::Parser;
use kanade::sim::{simulate, FaultSchedule, FleetPlan};

// Thousands of agents allocate and free small buffers all day: mimalloc
// spends a fraction of glibc's time on it. The trace does not depend on
// the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulate a scheduled fleet-day.
#[derive(Parser)]
struct Args {
    /// Agents in the fleet.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Random faults per simulated hour (partitions, crash-restarts, broker restarts).
    #[arg(long, default_value_t = 20)]
    faults_per_hour: u32,
    /// Heartbeat interval (humantime).
    #[arg(long, default_value = "5m")]
    heartbeat: humantime::Duration,
    /// Heap faulted in on a second thread while the fleet starts, in MiB,
    /// at most 65,536 (default: what a day of the default workload grows
    /// by, agents × hours × 5 KiB, at most 8 GiB, and none when mimalloc's
    /// purging is on, as freed pages would go back to the OS; 0: none).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    warm_heap_mib: Option<u64>,
}

/// mimalloc's option for how long freed memory is kept before it goes
/// back to the OS (1 s by default, read once at process start).
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Runs this program again with freed memory kept (`MIMALLOC_PURGE_DELAY=-1`)
/// unless the variable is set already; returns only if that cannot be done.
/// A fleet-day frees and allocates gigabytes: handing freed pages back
/// after a second and faulting them in again cost 2–3 % at 10,000 agents
/// (2 pairs; system time 5 s → 2.5 s in single runs). The trace does not
/// depend on the allocator. Set `MIMALLOC_PURGE_DELAY` to choose otherwise.
#[cfg(unix)]
fn keep_freed_memory() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(PURGE_DELAY, "-1")
        .exec();
    eprintln!("running with mimalloc's default purge delay ({error})");
}

#[cfg(not(unix))]
fn keep_freed_memory() {}

/// Heap a fleet-day adds per agent and simulated hour once the fleet is
/// up — stored results and events, ledger entries, database rows: 5 to
/// 5.3 KiB with the default heartbeat (peak RSS at 2,000 agents: 194 MiB
/// after 1 h, 417 MiB after 24 h; at 10,000: 692 MiB and 1.88 GiB).
const GROWTH_PER_AGENT_HOUR: u64 = 5 << 10;

/// The most heap warmed unless `--warm-heap-mib` asks for more, in MiB.
const WARM_HEAP_DEFAULT_CAP_MIB: u64 = 8 << 10;

/// Faults in `bytes` of heap on a thread of its own, then frees it, while
/// the fleet starts on the main thread. Freed memory stays with mimalloc
/// (purging is off, see [`keep_freed_memory`]), so the day's later
/// allocations reuse pages the kernel has already cleared instead of
/// stopping the simulation at every first touch of a fresh page — 9 % of
/// the samples at 10,000 agents, as this virtual machine clears memory it
/// has not touched before at 0.3–0.5 GB/s. The kernel does that work on
/// the other core. The trace does not depend on the allocator.
fn warm_heap(bytes: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Chunks mimalloc serves from its arenas and takes back on free.
        const CHUNK: usize = 4 << 20;
        let chunks: Vec<Vec<u8>> = (0..bytes.div_ceil(CHUNK))
            .map(|_| vec![1u8; CHUNK])
            .collect();
        std::hint::black_box(&chunks);
    })
}

fn main() {
    keep_freed_memory();
    let args = Args::parse();
    let purging_off = std::env::var(PURGE_DELAY).is_ok_and(|delay| delay.trim() == "-1");
    let warm_mib = args.warm_heap_mib.unwrap_or(if purging_off {
        let bytes = (args.agents as u64)
            .saturating_mul(args.hours)
            .saturating_mul(GROWTH_PER_AGENT_HOUR);
        (bytes >> 20).min(WARM_HEAP_DEFAULT_CAP_MIB)
    } else {
        0
    });
    // At most 64 GiB (the argument's range): fits a 64-bit usize.
    let warm_bytes = usize::try_from(warm_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let warming = warm_heap(warm_bytes);
    let horizon = Duration::from_secs(args.hours * 3600);
    let faults = FaultSchedule::random(args.seed, args.agents, horizon, args.faults_per_hour);
    println!(
        "simulating {} agents for {} h (seed {}, {} timed faults, {}, heartbeat every {})",
        args.agents,
        args.hours,
        args.seed,
        faults.faults.len(),
        faults.network,
        args.heartbeat
    );
    let mut plan = FleetPlan::fleet_day(args.agents, args.hours, args.seed, faults);
    if let kanade::sim::Workload::FleetDay { heartbeat, .. } = &mut plan.workload {
        *heartbeat = args.heartbeat.into();
    }
    let outcome = match simulate(plan) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let _ = warming.join();
    let wall = outcome.wall.as_secs_f64();
    let events = outcome.events();
    println!(
        "simulated          {}",
        humantime::format_duration(Duration::from_secs(outcome.simulated.as_secs()))
    );
    println!("wall time          {wall:.1} s");
    println!("simulated events   {events}");
    println!("events per wall s  {:.0}", events as f64 / wall.max(1e-9));
    for (kind, count) in &outcome.messages {
        println!("  messages {kind:<10} {count}");
    }
    println!("  script runs        {}", outcome.invocations.len());
    println!("  injected faults    {}", outcome.fault_events);
    println!("executions         {}", outcome.executions.len());
    if let Some(kib) = kanade::agent::process_status_kib("self", "VmHWM") {
        println!("peak RSS           {:.0} MiB", kib as f64 / 1024.0);
    }
    println!("trace hash         {}", outcome.trace_hash);
    let (violations, tally) = outcome.check();
    println!(
        "properties         {} violations; {} results delivered, {} superseded while cut off",
        violations.len(),
        tally.delivered,
        tally.superseded
    );
    if !violations.is_empty() {
        print!("{}", outcome.report(&violations));
        std::process::exit(1);
    }
}
