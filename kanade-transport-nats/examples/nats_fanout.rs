//! Fan-out round trip: N simulated agents, each with its own connection,
//! receive one command and each publish a result into the RESULTS stream; a
//! collector times the round until all N results are in. Runs twice per N —
//! raw async-nats, and through the kanade transport traits — and prints
//! both medians and their ratio. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p kanade-transport-nats --example nats_fanout
//! NATS_URL=nats://host:4222 cargo run --release -p kanade-transport-nats --example nats_fanout
//! ```
//!
//! Without `NATS_URL` it starts a local `nats-server` (≥ 2.10 on PATH).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use kanade_core::names::StreamSpec;
use kanade_core::transport::{Headers, MessageLog, StreamConfig, Transport};
use kanade_transport_nats::test_server::NatsServer;
use kanade_transport_nats::{NatsOptions, NatsTransport};
use tokio::sync::mpsc;

type BenchResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const ROUNDS: usize = 15;
const AGENT_COUNTS: [usize; 3] = [10, 100, 1000];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = NatsServer::try_start()?;
            let url = server.url();
            (Some(server), url)
        }
    };
    println!("fan-out round trip against {url}, {ROUNDS} rounds per row (median)");
    let setup = NatsTransport::connect(NatsOptions::new(url.clone())).await?;
    for spec in [StreamSpec::EXEC, StreamSpec::RESULTS] {
        setup
            .messages()
            .create_stream(StreamConfig::from_spec(&spec))
            .await?;
    }
    println!(
        "{:>6} {:>10} {:>14} {:>8}",
        "agents", "raw ms", "transport ms", "ratio"
    );
    for agents in AGENT_COUNTS {
        let raw = median(raw_rounds(&url, agents).await?);
        let transport = median(transport_rounds(&url, agents).await?);
        println!(
            "{agents:>6} {:>10.2} {:>14.2} {:>8.2}",
            ms(raw),
            ms(transport),
            transport.as_secs_f64() / raw.as_secs_f64()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Waits until `expected` results of `round` have arrived.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<String>,
    round: &str,
    expected: usize,
) -> BenchResult {
    let mut seen = 0;
    while seen < expected {
        let subject = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await?
            .ok_or("collector ended")?;
        if subject.ends_with(round) {
            seen += 1;
        }
    }
    Ok(())
}

async fn raw_rounds(
    url: &str,
    agents: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>> {
    let mut handles = Vec::with_capacity(agents);
    for _ in 0..agents {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client.clone());
        let mut commands = client.subscribe("commands.all").await?;
        client.flush().await?;
        handles.push(tokio::spawn(async move {
            while let Some(command) = commands.next().await {
                let request = String::from_utf8_lossy(&command.payload).into_owned();
                if let Ok(ack) = js
                    .publish(format!("results.{request}"), Bytes::from_static(b"{}"))
                    .await
                {
                    let _ = ack.await;
                }
            }
        }));
    }
    let backend = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(backend.clone());
    let mut results = backend.subscribe("results.*").await?;
    backend.flush().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        while let Some(message) = results.next().await {
            if tx.send(message.subject.to_string()).is_err() {
                break;
            }
        }
    });
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let request = format!("raw-{agents}-{round}");
        let started = Instant::now();
        js.publish("commands.all", Bytes::from(request.clone()))
            .await?
            .await?;
        collect(&mut rx, &request, agents).await?;
        rounds.push(started.elapsed());
    }
    collector.abort();
    for handle in handles {
        handle.abort();
    }
    Ok(rounds)
}

async fn transport_rounds(
    url: &str,
    agents: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>> {
    let mut handles = Vec::with_capacity(agents);
    for _ in 0..agents {
        let transport = NatsTransport::connect(NatsOptions::new(url)).await?;
        let log: Arc<dyn MessageLog> = transport.messages();
        let mut commands = log.subscribe("commands.all").await?;
        handles.push(tokio::spawn(async move {
            let _keep = transport;
            while let Some(command) = commands.next().await {
                let request = String::from_utf8_lossy(&command.payload).into_owned();
                let _ = log
                    .publish(
                        &format!("results.{request}"),
                        Headers::new(),
                        Bytes::from_static(b"{}"),
                    )
                    .await;
            }
        }));
    }
    let backend = NatsTransport::connect(NatsOptions::new(url)).await?;
    let log = backend.messages();
    let mut results = log.subscribe("results.*").await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        while let Some(message) = results.next().await {
            if tx.send(message.subject).is_err() {
                break;
            }
        }
    });
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let request = format!("kanade-{agents}-{round}");
        let started = Instant::now();
        log.publish("commands.all", Headers::new(), Bytes::from(request.clone()))
            .await?;
        collect(&mut rx, &request, agents).await?;
        rounds.push(started.elapsed());
    }
    collector.abort();
    for handle in handles {
        handle.abort();
    }
    Ok(rounds)
}
