//! File transport benchmark: publish rate with durable (fsynced) acks, KV
//! put rate, and cross-process delivery latency. Prints figures; asserts
//! nothing.
//!
//! ```text
//! cargo run --release -p kanade-core --example file-bench [-- <scratch dir>]
//! ```
//!
//! The scratch directory (default: the system temp dir) must be on the disk
//! you care about: on tmpfs, fsync costs nothing and the figures flatter.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kanade_core::transport::file::FileTransport;
use kanade_core::transport::{
    ConsumerConfig, DeliverPolicy, Headers, KvConfig, StreamConfig, Transport,
};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

const PUBLISHES: usize = 2_000;
const LATENCY_MESSAGES: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--publisher") {
        return publisher(Path::new(&args[2])).await;
    }
    let scratch = args.get(1).map_or_else(std::env::temp_dir, PathBuf::from);
    let run = scratch.join(format!("kanade-file-bench-{}", std::process::id()));
    println!("kanade file transport benchmark in {}", run.display());
    let result = async {
        durable_publish_rate(&run.join("publish")).await?;
        kv_put_rate(&run.join("kv")).await?;
        cross_process_latency(&run.join("latency")).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&run);
    result
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn durable_publish_rate(dir: &Path) -> BenchResult {
    let transport = FileTransport::open(dir)?;
    let log = transport.messages();
    log.create_stream(StreamConfig::new("RESULTS", &["results.>"]))
        .await?;
    let payload = Bytes::from(vec![b'x'; 512]);
    let started = Instant::now();
    for i in 0..PUBLISHES {
        log.publish(&format!("results.r{i}"), Headers::new(), payload.clone())
            .await?;
    }
    let elapsed = started.elapsed();
    println!(
        "stream publish, fsynced ack, 512 B   {:>9.0} msg/s  ({:.2} ms per publish, {PUBLISHES} publishes)",
        per_second(PUBLISHES, elapsed),
        elapsed.as_secs_f64() * 1000.0 / PUBLISHES as f64
    );
    Ok(())
}

async fn kv_put_rate(dir: &Path) -> BenchResult {
    let transport = FileTransport::open(dir)?;
    let kv = transport.key_value(KvConfig::new("agents_state")).await?;
    let value = Bytes::from(vec![b'v'; 256]);
    let started = Instant::now();
    for i in 0..PUBLISHES {
        kv.put(&format!("pcs.pc-{}", i % 100), value.clone())
            .await?;
    }
    let elapsed = started.elapsed();
    println!(
        "kv put, fsynced, 256 B               {:>9.0} put/s  ({:.2} ms per put, {PUBLISHES} puts)",
        per_second(PUBLISHES, elapsed),
        elapsed.as_secs_f64() * 1000.0 / PUBLISHES as f64
    );
    Ok(())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The child: publishes timestamped messages every 5 ms.
async fn publisher(dir: &Path) -> BenchResult {
    let transport = FileTransport::open(dir)?;
    let log = transport.messages();
    for _ in 0..LATENCY_MESSAGES {
        let sent = now_nanos().to_le_bytes();
        log.publish(
            "results.latency",
            Headers::new(),
            Bytes::copy_from_slice(&sent),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn latency_of(payload: &[u8]) -> Duration {
    let sent = u64::from_le_bytes(
        payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default(),
    );
    Duration::from_nanos(now_nanos().saturating_sub(sent))
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    format!(
        "median {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  (n={})",
        pct(0.5),
        pct(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}

async fn cross_process_latency(dir: &Path) -> BenchResult {
    let transport = FileTransport::open(dir)?;
    let log = transport.messages();
    log.create_stream(StreamConfig::new("RESULTS", &["results.>"]))
        .await?;
    let consumer = log
        .create_consumer(
            "RESULTS",
            ConsumerConfig::new("backend", DeliverPolicy::New),
        )
        .await?;
    let mut subscription = log.subscribe("results.*").await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--publisher")
        .arg(dir)
        .spawn()?;
    let durable = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(LATENCY_MESSAGES);
        while samples.len() < LATENCY_MESSAGES {
            let Ok(delivery) = consumer.next().await else {
                break;
            };
            samples.push(latency_of(&delivery.message.payload));
            let _ = delivery.ack().await;
        }
        samples
    });
    let mut plain = Vec::with_capacity(LATENCY_MESSAGES);
    while plain.len() < LATENCY_MESSAGES {
        let Some(message) = subscription.next().await else {
            break;
        };
        plain.push(latency_of(&message.payload));
    }
    let durable = durable.await?;
    child.wait().await?;
    println!("cross-process, plain subscription   {}", summary(plain));
    println!("cross-process, durable consumer     {}", summary(durable));
    Ok(())
}
