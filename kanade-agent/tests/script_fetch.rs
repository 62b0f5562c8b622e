//! Fetching a script object through a broker failover: transient failures
//! of the `scripts` object store (disconnected, timed out — as while a
//! JetStream cluster elects a new leader) are retried and the run goes
//! ahead; a missing object fails the run at once. The store is a mockall
//! mock (the one seam a real transport cannot be made to fail this way on
//! cue); everything else is the memory transport.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use kanade_core::names::OBJECT_SCRIPTS;
use kanade_core::policy::script::sha256_hex;
use kanade_core::transport::{
    Capabilities, KeyValue, KvConfig, MessageLog, ObjectInfo, ObjectReader, ObjectStore,
    ObjectStoreConfig, Transport, TransportError, TransportResult,
};

/// The one call the agent makes of the `scripts` store, as a seam mockall
/// can stand in for.
#[mockall::automock]
trait Fetch {
    /// The object's body, or how fetching it failed.
    fn get(&self, name: &str) -> TransportResult<Vec<u8>>;
}

/// A `scripts` store whose `get` is a [`MockFetch`]; nothing else is used.
struct Scripts(MockFetch);

#[async_trait]
impl ObjectStore for Scripts {
    fn bucket(&self) -> &str {
        OBJECT_SCRIPTS
    }
    async fn put(
        &self,
        _name: &str,
        _reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo> {
        Err(TransportError::Unsupported("put in this test"))
    }
    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        let body = self.0.get(name)?;
        Ok(Box::new(std::io::Cursor::new(body)))
    }
    async fn info(&self, _name: &str) -> TransportResult<ObjectInfo> {
        Err(TransportError::Unsupported("info in this test"))
    }
    async fn delete(&self, _name: &str) -> TransportResult<()> {
        Err(TransportError::Unsupported("delete in this test"))
    }
    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        Err(TransportError::Unsupported("list in this test"))
    }
}

/// The memory transport, with `scripts` answered by a mock.
struct WithScripts {
    inner: Arc<dyn Transport>,
    scripts: Arc<dyn ObjectStore>,
}

#[async_trait]
impl Transport for WithScripts {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn messages(&self) -> Arc<dyn MessageLog> {
        self.inner.messages()
    }
    async fn key_value(&self, config: KvConfig) -> TransportResult<Arc<dyn KeyValue>> {
        self.inner.key_value(config).await
    }
    async fn object_store(
        &self,
        config: ObjectStoreConfig,
    ) -> TransportResult<Arc<dyn ObjectStore>> {
        if config.bucket == OBJECT_SCRIPTS {
            Ok(self.scripts.clone())
        } else {
            self.inner.object_store(config).await
        }
    }
}

const BODY: &[u8] = b"echo through the failover";

fn by_object(request: &str) -> kanade_core::wire::Command {
    let mut command = command(request, "");
    command.script_object = Some("hello/1".into());
    command.script_object_sha256 = Some(sha256_hex(BODY));
    command
}

#[tokio::test(start_paused = true)]
async fn a_transient_store_failure_is_retried_and_the_run_goes_ahead() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut scripts = MockFetch::new();
    let counted = calls.clone();
    scripts.expect_get().returning(move |_| {
        // Twice away (as during a leader election), then the body.
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 => Err(TransportError::Disconnected("no responders".into())),
            1 => Err(TransportError::Timeout(Duration::from_secs(5))),
            _ => Ok(BODY.to_vec()),
        }
    });
    let transport: Arc<dyn Transport> = Arc::new(WithScripts {
        inner: memory(),
        scripts: Arc::new(Scripts(scripts)),
    });
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    h.send("commands.all", &by_object("through")).await;
    let result = next_result(&mut results).await;
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "echo through the failover"),
        "{}",
        result.stderr
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_missing_object_fails_the_run_at_once() {
    let mut scripts = MockFetch::new();
    scripts
        .expect_get()
        .times(1)
        .returning(|name| Err(TransportError::not_found(format!("object {name}"))));
    let transport: Arc<dyn Transport> = Arc::new(WithScripts {
        inner: memory(),
        scripts: Arc::new(Scripts(scripts)),
    });
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    h.send("commands.all", &by_object("missing")).await;
    let result = next_result(&mut results).await;
    assert_eq!(result.exit_code, 1, "{}", result.stderr);
    assert!(result.stderr.contains("not found"), "{}", result.stderr);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_stays_away_fails_the_run_after_a_minute() {
    let mut scripts = MockFetch::new();
    scripts
        .expect_get()
        .returning(|_| Err(TransportError::Disconnected("no responders".into())));
    let transport: Arc<dyn Transport> = Arc::new(WithScripts {
        inner: memory(),
        scripts: Arc::new(Scripts(scripts)),
    });
    let mut results = results(&transport).await;
    let h = Harness::start(transport.clone()).await;
    let sent = tokio::time::Instant::now();
    h.send("commands.all", &by_object("away")).await;
    let result = next_result(&mut results).await;
    assert_eq!(result.exit_code, 1, "{}", result.stderr);
    assert!(result.stderr.contains("disconnected"), "{}", result.stderr);
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(50) && waited <= Duration::from_secs(70),
        "gave up after {waited:?} of simulated time"
    );
}
