//! Memory transport benchmark: publish rate and 1 → 1,000-subscriber fan-out
//! latency. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p kanade-core --example memory-bench
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{Headers, StreamConfig, Transport};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult {
    println!("kanade memory transport benchmark ({} CPUs)", num_cpus());
    publish_rate().await?;
    fan_out_latency().await?;
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn rate(count: usize, elapsed: Duration) -> String {
    format!("{:>12.0} msg/s", count as f64 / elapsed.as_secs_f64())
}

async fn publish_rate() -> BenchResult {
    const COUNT: usize = 300_000;
    let payload = Bytes::from(vec![b'x'; 256]);

    let log = MemoryTransport::new().messages();
    let started = Instant::now();
    for _ in 0..COUNT {
        log.publish("heartbeat.pc-1", Headers::new(), payload.clone())
            .await?;
    }
    println!(
        "publish, no subscriber, 256 B          {}",
        rate(COUNT, started.elapsed())
    );

    let log = MemoryTransport::new().messages();
    let mut sub = log.subscribe("heartbeat.*").await?;
    let reader = tokio::spawn(async move {
        for _ in 0..COUNT {
            sub.next().await;
        }
    });
    let started = Instant::now();
    for _ in 0..COUNT {
        log.publish("heartbeat.pc-1", Headers::new(), payload.clone())
            .await?;
    }
    reader.await?;
    println!(
        "publish + 1 subscriber drained, 256 B  {}",
        rate(COUNT, started.elapsed())
    );

    let log = MemoryTransport::new().messages();
    let mut config = StreamConfig::new("EXEC", &["commands.>"]);
    config.max_msgs_per_subject = Some(1);
    log.create_stream(config).await?;
    let subjects: Vec<String> = (0..1000).map(|i| format!("commands.pc.pc-{i}")).collect();
    let started = Instant::now();
    for i in 0..COUNT {
        log.publish(
            &subjects[i % subjects.len()],
            Headers::new(),
            payload.clone(),
        )
        .await?;
    }
    println!(
        "publish into stream (keep last of 1000) {}",
        rate(COUNT, started.elapsed())
    );

    let log = MemoryTransport::new().messages();
    log.create_stream(StreamConfig::new("RESULTS", &["results.>"]))
        .await?;
    let started = Instant::now();
    for _ in 0..COUNT {
        log.publish("results.r-1", Headers::new(), payload.clone())
            .await?;
    }
    println!(
        "publish into stream (keep all)          {}",
        rate(COUNT, started.elapsed())
    );
    Ok(())
}

async fn fan_out_latency() -> BenchResult {
    const ROUNDS: usize = 200;
    println!("\nfan-out latency (publish → every subscriber has it), {ROUNDS} rounds");
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>12}",
        "subscribers", "p50", "p99", "max", "round p50"
    );
    for subscribers in [1usize, 10, 100, 1000] {
        let log = MemoryTransport::new().messages();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let origin = Instant::now();
        for _ in 0..subscribers {
            let mut sub = log.subscribe("commands.all").await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(message) = sub.next().await {
                    let sent =
                        u64::from_le_bytes(message.payload[..8].try_into().unwrap_or_default());
                    let latency = origin.elapsed().saturating_sub(Duration::from_nanos(sent));
                    if tx.send(latency).is_err() {
                        break;
                    }
                }
            });
        }
        let mut latencies = Vec::with_capacity(ROUNDS * subscribers);
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let sent = origin.elapsed().as_nanos() as u64;
            let round_start = Instant::now();
            log.publish(
                "commands.all",
                Headers::new(),
                Bytes::copy_from_slice(&sent.to_le_bytes()),
            )
            .await?;
            for _ in 0..subscribers {
                latencies.push(rx.recv().await.ok_or("subscriber ended")?);
            }
            rounds.push(round_start.elapsed());
        }
        latencies.sort();
        rounds.sort();
        let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
        println!(
            "{:>12} {:>10.1?} {:>10.1?} {:>10.1?} {:>12.1?}",
            subscribers,
            pct(&latencies, 0.50),
            pct(&latencies, 0.99),
            latencies[latencies.len() - 1],
            pct(&rounds, 0.50),
        );
    }
    Ok(())
}
