//! Agent benchmark: idle RSS of the `kanade-agent` binary, its RSS after
//! 1,000 commands, and the per-command overhead of the agent over a bare
//! process spawn. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p kanade-agent && cargo run --release -p kanade-agent --example agent_bench
//! ```
//!
//! RSS is measured on the real binary (target/release/kanade-agent, found
//! next to this example) talking to this process over the file transport.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kanade_agent::{Agent, AgentSettings};
use kanade_core::names::{StreamSpec, SubjectToken};
use kanade_core::transport::file::FileTransport;
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{Headers, StreamConfig, Subscription, Transport};

type Error = Box<dyn std::error::Error + Send + Sync>;

const OVERHEAD_RUNS: usize = 200;
const RSS_COMMANDS: usize = 1_000;

fn command(request: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": "bench", "version": "1", "request_id": request, "exec_id": "bench",
            "shell": "sh", "script": "true", "timeout_secs": 30,
        })
        .to_string(),
    )
}

fn rss_kib(pid: u32) -> Option<u64> {
    kanade_agent::process_status_kib(&pid.to_string(), "VmRSS")
}

async fn wait_results(results: &mut Subscription, count: usize) -> Result<(), Error> {
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(60), results.next())
            .await?
            .ok_or("results ended")?;
    }
    Ok(())
}

async fn overhead() -> Result<(), Error> {
    let started = Instant::now();
    for _ in 0..OVERHEAD_RUNS {
        tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .await?;
    }
    let bare = started.elapsed() / OVERHEAD_RUNS as u32;

    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let state = tempdir("overhead")?;
    let agent = Agent::builder(
        AgentSettings::new(SubjectToken::pc("bench")?, &state),
        transport.clone(),
    )
    .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    let log = transport.messages();
    let mut results = log.subscribe("results.*").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for i in 0..OVERHEAD_RUNS {
        log.publish("commands.all", Headers::new(), command(&format!("o{i}")))
            .await?;
        wait_results(&mut results, 1).await?;
    }
    let through_agent = started.elapsed() / OVERHEAD_RUNS as u32;
    let _ = stop.send(());
    running.await??;
    let _ = std::fs::remove_dir_all(&state);
    println!("bare `sh -c true` spawn            {:>8.2} ms", ms(bare));
    println!(
        "same command through the agent     {:>8.2} ms  (memory transport, sequential)",
        ms(through_agent)
    );
    println!(
        "per-command agent overhead         {:>8.2} ms  (gates, ledger + outbox fsyncs, start event, result)",
        ms(through_agent.saturating_sub(bare))
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn tempdir(name: &str) -> Result<PathBuf, Error> {
    let dir =
        std::env::temp_dir().join(format!("kanade-agent-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn rss() -> Result<(), Error> {
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("kanade-agent"))
        .ok_or("cannot locate the kanade-agent binary")?;
    if !binary.exists() {
        return Err(format!(
            "{} not built: run `cargo build --release -p kanade-agent` first",
            binary.display()
        )
        .into());
    }
    let store = tempdir("store")?;
    let state = tempdir("state")?;
    let transport = FileTransport::open(&store)?;
    let log = transport.messages();
    log.create_stream(StreamConfig::from_spec(&StreamSpec::EXEC))
        .await?;
    log.create_stream(StreamConfig::from_spec(&StreamSpec::RESULTS))
        .await?;
    let mut results = log.subscribe("results.*").await?;
    let mut heartbeats = log.subscribe("heartbeat.bench-pc").await?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("--transport")
        .arg(format!("file:{}", store.display()))
        .args(["--pc-id", "bench-pc", "--state-dir"])
        .arg(&state)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("agent exited")?;
    tokio::time::timeout(Duration::from_secs(30), heartbeats.next()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid).ok_or("cannot read the agent's RSS")?;
    let started = Instant::now();
    for i in 0..RSS_COMMANDS {
        log.publish("commands.all", Headers::new(), command(&format!("r{i}")))
            .await?;
    }
    wait_results(&mut results, RSS_COMMANDS).await?;
    let elapsed = started.elapsed();
    let after = rss_kib(pid).ok_or("cannot read the agent's RSS")?;
    child.kill().await?;
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_dir_all(&state);
    println!(
        "kanade-agent idle RSS              {:>8.1} MiB",
        idle as f64 / 1024.0
    );
    println!(
        "kanade-agent RSS after {RSS_COMMANDS} commands {:>8.1} MiB  ({RSS_COMMANDS} results in {:.1} s over the file transport)",
        after as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    println!("kanade agent benchmark");
    overhead().await?;
    rss().await
}
