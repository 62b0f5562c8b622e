//! A transport written by a user: it wraps the in-memory transport and
//! counts every message published through it, per subject root — the
//! shape of a metrics or audit layer. It implements the public
//! [`Transport`] contract and runs the public conformance suite, which it
//! passes; then it carries a real agent's traffic.
//!
//! ```text
//! cargo run --example custom_transport
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use kanade::transport::memory::MemoryTransport;
use kanade::transport::{
    conformance, Capabilities, Consumer, ConsumerConfig, Headers, KeyValue, KvConfig, MessageLog,
    ObjectStore, ObjectStoreConfig, PublishAck, StreamConfig, StreamInfo, Subscription, Transport,
    TransportResult,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publish counts by the subject's first token (`commands`, `results`, …).
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The user's transport: memory underneath, a counter on top.
#[derive(Clone, Default)]
struct CountingTransport {
    inner: MemoryTransport,
    counts: Counts,
}

/// The message log that counts, delegating everything to the inner log.
struct CountingLog {
    inner: Arc<dyn MessageLog>,
    counts: Counts,
}

#[async_trait]
impl MessageLog for CountingLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> TransportResult<Option<PublishAck>> {
        let ack = self.inner.publish(subject, headers, payload).await?;
        let root = subject.split('.').next().unwrap_or(subject).to_owned();
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(root)
            .or_default() += 1;
        Ok(ack)
    }

    async fn subscribe(&self, pattern: &str) -> TransportResult<Subscription> {
        self.inner.subscribe(pattern).await
    }

    async fn create_stream(&self, config: StreamConfig) -> TransportResult<StreamInfo> {
        self.inner.create_stream(config).await
    }

    async fn stream_info(&self, name: &str) -> TransportResult<StreamInfo> {
        self.inner.stream_info(name).await
    }

    async fn create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> TransportResult<Arc<dyn Consumer>> {
        self.inner.create_consumer(stream, config).await
    }
}

#[async_trait]
impl Transport for CountingTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "counting-memory",
            ..self.inner.capabilities()
        }
    }

    fn messages(&self) -> Arc<dyn MessageLog> {
        Arc::new(CountingLog {
            inner: self.inner.messages(),
            counts: self.counts.clone(),
        })
    }

    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        self.inner.key_value(config).await
    }

    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        self.inner.object_store(config).await
    }
}

fn main() -> Result<(), Error> {
    // The suite uses paused tokio time for the memory transport's timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let report = runtime.block_on(conformance::run_all(|| async {
        Arc::new(CountingTransport::default()) as Arc<dyn Transport>
    }));
    print!("{report}");
    if report.failed() > 0 {
        return Err(format!("{} conformance checks failed", report.failed()).into());
    }

    // The same transport carrying a real agent for a moment of paused time.
    let transport = CountingTransport::default();
    runtime.block_on(async {
        let state = tempfile::tempdir()?;
        let pc = kanade::core::names::SubjectToken::pc("pc-1")?;
        let settings = kanade::agent::AgentSettings::new(pc, state.path());
        let agent = kanade::agent::Agent::builder(settings, Arc::new(transport.clone())).build()?;
        let stop = tokio::time::sleep(std::time::Duration::from_secs(120));
        agent.run(stop).await?;
        Ok::<_, Error>(())
    })?;
    println!("publishes by subject root during 2 minutes of an idle agent:");
    for (root, count) in transport
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("  {root:<12} {count}");
    }
    Ok(())
}
