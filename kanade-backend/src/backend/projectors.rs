//! The projectors: results, start events and heartbeats from the transport
//! into SQLite, and [`Backend::run`], which runs them with the reaper and
//! the audit publisher.

use std::sync::Arc;
use std::time::Duration;

use kanade_core::names::{
    subjects, OBJECT_RESULT_OUTPUT, STREAM_EVENTS, STREAM_INVENTORY, STREAM_RESULTS,
};
use kanade_core::transport::ext::ObjectStoreExt;
use kanade_core::transport::{
    Consumer, ConsumerConfig, DeliverPolicy, ObjectStoreConfig, TransportError,
};
use kanade_core::wire::{EventStarted, ExecResult, Heartbeat, HwInventory};

use super::core::Backend;
use super::error::BackendError;
use crate::db::OverdueRun;

impl Backend {
    /// Runs the projectors until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BackendError> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(project_results(self.clone()));
        tasks.spawn(project_started(self.clone()));
        tasks.spawn(project_heartbeats(self.clone()));
        tasks.spawn(project_hardware(self.clone()));
        tasks.spawn(super::reaper::reaper(self.clone()));
        tasks.spawn(super::rollouts::rollout_driver(self.clone()));
        tasks.spawn(super::alerts::alert_publisher(self.clone()));
        // Agent-side schedules as this backend would sign them now (a new
        // signing key, a job changed by another backend instance).
        let republish = self.clone();
        tasks.spawn(async move {
            if let Err(e) = republish.publish_agent_schedules().await {
                tracing::warn!("agent-side schedules not republished at start: {e}");
            }
        });
        // Sleeps until an audit entry is appended: no entries, no traffic.
        tasks.spawn(
            crate::audit::AuditPublisher::new(self.log.clone(), self.db.clone())
                .inline_database(self.settings.inline_database)
                .run(),
        );
        shutdown.await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Records a result refused for its publisher proof: a warning and an
    /// audit entry `result.refused` (target: the execution), never stored.
    async fn refuse_result(
        &self,
        result: &ExecResult,
        payload_sha256: &str,
        reason: &kanade_core::policy::publisher::ProofError,
    ) {
        tracing::warn!(
            pc_id = result.pc_id,
            exec_id = ?result.exec_id,
            result_id = result.result_id,
            "result refused: {reason}"
        );
        let mut entry = self.own_audit_draft("result.refused", crate::audit::OUTCOME_DENIED);
        // The same message redelivered is recorded once.
        entry.id = Some(format!("result.refused:{payload_sha256}"));
        entry.target = result.exec_id.clone();
        entry.details = serde_json::json!({
            "pc_id": result.pc_id,
            "result_id": result.result_id,
            "reason": reason.to_string(),
        });
        let db = self.db.clone();
        if let Err(e) = self.run_db(move || db.append_audit(entry)).await {
            tracing::error!("refused result not audited: {e}");
        }
    }

    /// Follows `stdout_object` / `stderr_object` so stored rows hold the full text.
    async fn dereference(&self, result: &mut ExecResult) -> Result<(), TransportError> {
        let pointers = [
            (result.stdout_object.clone(), true),
            (result.stderr_object.clone(), false),
        ];
        if pointers.iter().all(|(p, _)| p.is_none()) {
            return Ok(());
        }
        let store = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_RESULT_OUTPUT))
            .await?;
        for (pointer, is_stdout) in pointers {
            let Some(key) = pointer else { continue };
            let bytes = store.get_bytes(&key, u64::MAX).await?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if is_stdout {
                result.stdout = text;
            } else {
                result.stderr = text;
            }
        }
        Ok(())
    }
}

/// Deliveries of a result whose overflow object cannot be read before it is
/// stored without the overflowed text.
const MAX_OVERFLOW_TRIES: u32 = 12;

async fn project_results(backend: Backend) {
    let mut config = ConsumerConfig::new(RESULTS_CONSUMER, DeliverPolicy::All);
    config.ack_wait = Duration::from_secs(60);
    let consumer = consumer_retrying(&backend, STREAM_RESULTS, config, "results projector").await;
    loop {
        let deliveries = match consumer.next_batch(RESULT_BATCH).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::warn!("results projector: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut ready = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if let Some(result) = backend.accept_result(&delivery).await {
                ready.push((delivery, result));
            }
        }
        if ready.is_empty() {
            continue;
        }
        let results: Vec<ExecResult> = ready.iter().map(|(_, r)| r.clone()).collect();
        let db = backend.db.clone();
        let now = backend.now();
        match backend
            .run_db(move || db.store_results_at(&results, false, now))
            .await
        {
            // Acked only after the rows are committed.
            Ok(written) => {
                // Redeliveries and duplicates store nothing: not counted.
                let stored = written.iter().filter(|w| **w).count();
                backend.metrics.results_stored.inc_by(stored as u64);
                for (delivery, _) in &ready {
                    let _ = delivery.ack().await;
                }
            }
            Err(e) => {
                tracing::error!("{} results not stored: {e}", ready.len());
                for (delivery, _) in &ready {
                    let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                }
            }
        }
    }
}

/// The results projector's durable consumer on `RESULTS` (its lag is
/// that consumer's pending count).
pub const RESULTS_CONSUMER: &str = "backend_results";

/// Results stored per transaction at most (a burst of deliveries that
/// were pending together).
const RESULT_BATCH: usize = 256;

impl Backend {
    /// A delivered result made ready to store: parsed (a malformed one is
    /// acknowledged and dropped), its publisher proof checked (a refused
    /// one is audited, acknowledged and dropped) and its overflow output
    /// read (not readable yet: handed back for later, `None`; after
    /// [`MAX_OVERFLOW_TRIES`] stored without it, with a note).
    async fn accept_result(
        &self,
        delivery: &kanade_core::transport::Delivery,
    ) -> Option<ExecResult> {
        let mut result: ExecResult = match serde_json::from_slice(&delivery.message.payload) {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(
                    subject = delivery.message.subject,
                    "malformed result dropped: {e}"
                );
                let _ = delivery.ack().await;
                return None;
            }
        };
        if let Some(identities) = &self.settings.agent_identities {
            let message = &delivery.message;
            if let Err(reason) = identities.verify(
                &result.pc_id,
                &message.subject,
                &message.payload,
                &message.headers,
            ) {
                let digest = crate::audit::chain::sha256_hex(&message.payload);
                self.refuse_result(&result, &digest, &reason).await;
                let _ = delivery.ack().await;
                return None;
            }
        }
        if let Err(e) = self.dereference(&mut result).await {
            if delivery.delivered < MAX_OVERFLOW_TRIES {
                tracing::warn!(
                    result_id = result.result_id,
                    "overflow not readable yet: {e}"
                );
                let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                return None;
            }
            // Store what we have rather than never completing the execution.
            tracing::error!(
                result_id = result.result_id,
                "overflow unreadable, storing without it: {e}"
            );
            result
                .stderr
                .push_str(&format!("\nkanade: output object unreadable: {e}"));
        }
        Some(result)
    }
}

async fn project_started(backend: Backend) {
    let mut config = ConsumerConfig::new("backend_started", DeliverPolicy::All);
    config.filter_subjects = vec!["events.started.>".into()];
    let consumer = consumer_retrying(&backend, STREAM_EVENTS, config, "start projector").await;
    loop {
        let Ok(delivery) = consumer.next().await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if let Ok(event) = serde_json::from_slice::<EventStarted>(&delivery.message.payload) {
            let db = backend.db.clone();
            let started_at = event.started_at;
            let run = OverdueRun {
                result_id: event.result_id.clone(),
                exec_id: event.exec_id.clone(),
                request_id: event.request_id.clone(),
                pc_id: event.pc_id.clone(),
                started_at: event.started_at.to_rfc3339(),
            };
            if let Err(e) = backend
                .run_db(move || db.insert_run(&run, started_at, 3600))
                .await
            {
                tracing::warn!("start event not stored: {e}");
                let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                continue;
            }
        }
        let _ = delivery.ack().await;
    }
}

/// Keeps each pc's latest hardware inventory (`inventory.<pc>.hw`) for the
/// agents list. The pc is the subject's (an agent may publish only its
/// own); an unreadable report is logged and dropped.
async fn project_hardware(backend: Backend) {
    let mut config = ConsumerConfig::new("backend_hardware", DeliverPolicy::All);
    config.filter_subjects = vec!["inventory.*.hw".into()];
    let consumer =
        consumer_retrying(&backend, STREAM_INVENTORY, config, "hardware projector").await;
    loop {
        let Ok(delivery) = consumer.next().await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let pc = delivery
            .message
            .subject
            .split('.')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        match serde_json::from_slice::<HwInventory>(&delivery.message.payload) {
            Ok(mut inventory) => {
                inventory.pc_id = pc;
                let db = backend.db.clone();
                if let Err(e) = backend.run_db(move || db.record_hardware(&inventory)).await {
                    tracing::warn!("hardware inventory not stored: {e}");
                    let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                    continue;
                }
            }
            Err(e) => tracing::warn!(pc, "unreadable hardware inventory dropped: {e}"),
        }
        let _ = delivery.ack().await;
    }
}

/// The durable consumer `config` on `stream`, retried every second until
/// the transport creates it (the broker may be away when the backend
/// starts); `what` names the projector in the log.
async fn consumer_retrying(
    backend: &Backend,
    stream: &str,
    config: ConsumerConfig,
    what: &str,
) -> Arc<dyn Consumer> {
    loop {
        match backend.log.create_consumer(stream, config.clone()).await {
            Ok(consumer) => return consumer,
            Err(e) => {
                tracing::warn!("{what}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Aborts a helper task when its owner ends (or is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs when an agent's clock offset becomes large (and when it is fixed),
/// once per change; `skewed` holds the pcs currently reported.
fn report_skew(sighting: &crate::db::Sighting, skewed: &mut std::collections::HashSet<String>) {
    let pc = &sighting.heartbeat.pc_id;
    let offset_ms = sighting.clock_offset_ms();
    let large = kanade_core::policy::clock::is_large(chrono::Duration::milliseconds(offset_ms));
    if large && skewed.insert(pc.clone()) {
        tracing::warn!(
            pc_id = pc,
            offset_ms,
            "agent clock skew: its heartbeats are stamped {offset_ms} ms off the backend's clock"
        );
    } else if !large && skewed.remove(pc) {
        tracing::info!(pc_id = pc, offset_ms, "agent clock skew resolved");
    }
}

/// Most heartbeats stored in one transaction.
const HEARTBEAT_BATCH: usize = 1000;

/// How long the heartbeat projector gathers heartbeats into one
/// transaction (presence is judged over 90 s windows: a quarter second
/// of delay is invisible).
const HEARTBEAT_COALESCE: Duration = Duration::from_millis(250);

/// The heartbeats among `arrivals` (payload, when the backend received
/// it) that parse, each reported if its clock offset became large or was
/// fixed (`skewed`: the pcs reported now); the rest are dropped.
fn sightings(
    arrivals: Vec<(bytes::Bytes, chrono::DateTime<chrono::Utc>)>,
    skewed: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Vec<crate::db::Sighting> {
    let mut skewed = skewed.lock().unwrap_or_else(|p| p.into_inner());
    arrivals
        .into_iter()
        .filter_map(|(payload, received_at)| {
            let heartbeat = serde_json::from_slice::<Heartbeat>(&payload).ok()?;
            let sighting = crate::db::Sighting {
                heartbeat,
                received_at,
            };
            report_skew(&sighting, &mut skewed);
            Some(sighting)
        })
        .collect()
}

/// Whether a heartbeat's payload may list quarantined versions: it names
/// the field, or holds an escape (`\u…`) that could spell the name.
/// A `false` is certain; a `true` is settled by parsing.
fn may_quarantine(payload: &[u8]) -> bool {
    memchr::memmem::find(payload, b"quarantined_versions").is_some()
        || memchr::memmem::find(payload, b"\\u").is_some()
}

async fn project_heartbeats(backend: Backend) {
    let mut heartbeats = match backend.log.subscribe(subjects::HEARTBEAT_FILTER).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!("heartbeat projector: {e}");
            return;
        }
    };
    // A reader task awaits every `next()` to completion (a subscription's
    // `next` need not be cancel-safe) and queues the messages, so the
    // projector can take what has already arrived without waiting.
    // Each message is stamped with the backend's clock as it arrives:
    // presence is when the backend heard from an agent, not what the
    // agent's clock says.
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let clock = backend.clone();
    let _reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(message) = heartbeats.next().await {
            if queue.send((message.payload, clock.now())).is_err() {
                break;
            }
        }
    }));
    let skewed = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    while let Some(arrival) = queued.recv().await {
        // Whatever else arrives within HEARTBEAT_COALESCE goes into the
        // same transaction: a large fleet's steady trickle of heartbeats
        // costs one commit (one fsync) per window, not one each. Arrival
        // times were stamped already, so the wait changes no data.
        tokio::time::sleep(HEARTBEAT_COALESCE).await;
        let mut arrivals = vec![arrival];
        while arrivals.len() < HEARTBEAT_BATCH {
            let Ok(arrival) = queued.try_recv() else {
                break;
            };
            arrivals.push(arrival);
        }
        // A host reporting a quarantined version may use up an agent
        // rollout's error budget: such a batch is checked here, after it
        // is stored. Any other is parsed and stored on the database's own
        // thread when it has one (nothing waits for a heartbeat).
        let quarantine_possible = arrivals.iter().any(|(payload, _)| may_quarantine(payload));
        if backend.db.writes_behind() && !quarantine_possible {
            let skewed = skewed.clone();
            backend
                .db
                .upsert_agents_behind(move || sightings(arrivals, &skewed));
            continue;
        }
        // The batches queued before this one report their skew first.
        backend.db.wait_for_queued_writes();
        let batch = sightings(arrivals, &skewed);
        if batch.is_empty() {
            continue;
        }
        let quarantines = batch
            .iter()
            .any(|s| s.heartbeat.quarantined_versions.is_some());
        let db = backend.db.clone();
        if let Err(e) = backend.run_db(move || db.upsert_agents(&batch)).await {
            tracing::warn!("heartbeats not stored: {e}");
        } else if quarantines {
            if let Err(e) = backend.check_agent_rollout().await {
                tracing::warn!("agent rollout budget not checked: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A heartbeat as an agent writes it that lists quarantined
        /// versions is always one [`may_quarantine`] says may.
        #[test]
        fn may_quarantine_is_never_wrong_about_a_written_heartbeat(
            versions in proptest::option::of(proptest::collection::vec("[0-9a-z.\\-]{0,8}", 0..3)),
            hostname in proptest::option::of("\\PC{0,12}"),
        ) {
            let mut heartbeat: Heartbeat = serde_json::from_str(
                r#"{"pc_id":"pc-1","at":"2026-06-01T10:00:00Z","agent_version":"1"}"#,
            )
            .expect("heartbeat");
            heartbeat.hostname = hostname;
            heartbeat.quarantined_versions = versions;
            let payload = serde_json::to_vec(&heartbeat).expect("json");
            let listed = heartbeat.quarantined_versions.is_some();
            prop_assert!(!listed || may_quarantine(&payload));
        }

        /// However the field's name is spelled with `\u` escapes, a
        /// payload that parses to a quarantine list may quarantine.
        #[test]
        fn an_escaped_field_name_always_may_quarantine(
            escaped in proptest::collection::vec(any::<bool>(), "quarantined_versions".len()),
        ) {
            let key: String = "quarantined_versions"
                .chars()
                .zip(escaped)
                .map(|(c, escape)| if escape { format!("\\u{:04x}", c as u32) } else { c.to_string() })
                .collect();
            let payload = format!(
                r#"{{"pc_id":"pc-1","at":"2026-06-01T10:00:00Z","agent_version":"1","{key}":["2"]}}"#
            );
            let parsed: Heartbeat = serde_json::from_str(&payload).expect("parses");
            prop_assert!(parsed.quarantined_versions.is_some());
            prop_assert!(may_quarantine(payload.as_bytes()));
        }
    }

    /// A key spelled with escapes is still the field: such a payload may
    /// quarantine; a plain heartbeat may not.
    #[test]
    fn an_escaped_field_name_may_quarantine() {
        let escaped = br#"{"pc_id":"pc-1","at":"2026-06-01T10:00:00Z","agent_version":"1","quarantined\u005fversions":["2"]}"#;
        let parsed: Heartbeat = serde_json::from_slice(escaped).expect("parses");
        assert_eq!(parsed.quarantined_versions, Some(vec!["2".to_owned()]));
        assert!(may_quarantine(escaped));
        let plain = br#"{"pc_id":"pc-1","at":"2026-06-01T10:00:00Z","agent_version":"1"}"#;
        assert!(!may_quarantine(plain));
    }
}
