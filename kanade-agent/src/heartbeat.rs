//! Presence on the bus: the heartbeat (built from cached process facts,
//! published on the live config's period and on every config change) and
//! the hardware inventory (at start, then daily).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade_core::names::subjects;
use kanade_core::transport::ext::{to_json_bytes, JsonCallError, MessageLogExt};
use kanade_core::transport::Headers;
use serde::Serialize;

use crate::state::Inner;

/// A heartbeat made of borrowed parts: it serialises to the same JSON as
/// [`kanade_core::wire::Heartbeat`] (the same fields, order and omissions;
/// a test compares the two), without copying the agent's strings at every
/// beat, which a process embedding thousands of agents (a simulation)
/// does millions of times a day.
#[derive(Serialize)]
struct HeartbeatOut<'a> {
    pc_id: &'a str,
    #[serde(with = "kanade_core::wire::timestamp")]
    at: DateTime<Utc>,
    agent_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_family: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_arch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_cpu_pct: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_keys: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined_versions: Option<Vec<String>>,
}

/// This agent's heartbeat now, as the JSON published on `subject`.
fn heartbeat_json(inner: &Inner, subject: &str) -> Result<bytes::Bytes, JsonCallError> {
    let facts = process_facts();
    let quarantined_versions = inner
        .settings
        .self_update
        .as_ref()
        .map(|_| crate::update::quarantined(&inner.settings.state_dir))
        .filter(|list| !list.is_empty());
    inner.trust.with_fingerprints(|command_keys| {
        to_json_bytes(
            subject,
            &HeartbeatOut {
                pc_id: inner.settings.pc_id.as_str(),
                at: inner.clock.now(),
                agent_version: &inner.settings.agent_version,
                hostname: facts.hostname.as_deref(),
                os_family: Some(std::env::consts::OS),
                agent_arch: Some(std::env::consts::ARCH),
                agent_cpu_pct: None,
                agent_rss_bytes: facts.rss_bytes,
                enforcing: Some(inner.trust.enforcing()),
                command_keys,
                quarantined_versions,
            },
        )
    })
}

/// Host name and resident memory as reported in heartbeats.
#[derive(Clone)]
struct ProcessFacts {
    /// Shared: each heartbeat takes a reference, not a copy.
    hostname: Option<Arc<str>>,
    rss_bytes: Option<u64>,
}

/// [`ProcessFacts`], read at most once per wall-clock second per process:
/// one agent heartbeats far less often, but a process embedding thousands
/// of agents (a simulation) would otherwise read `/proc` for each.
fn process_facts() -> ProcessFacts {
    static CACHE: Mutex<Option<(std::time::Instant, ProcessFacts)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, facts)) = cache.as_ref() {
        if at.elapsed() < Duration::from_secs(1) {
            return facts.clone();
        }
    }
    let facts = ProcessFacts {
        hostname: hostname::get().ok().map(|h| Arc::from(h.to_string_lossy())),
        rss_bytes: own_rss_bytes(),
    };
    *cache = Some((std::time::Instant::now(), facts.clone()));
    facts
}

/// This process's resident memory (Linux), for heartbeats.
fn own_rss_bytes() -> Option<u64> {
    crate::presence::process_status_kib("self", "VmRSS").map(|kib| kib * 1024)
}

/// Publishes one heartbeat on `subject` (failures are logged, not retried).
pub(crate) async fn publish_heartbeat(inner: &Inner, subject: &str) {
    let sent = match heartbeat_json(inner, subject) {
        Ok(payload) => inner
            .log
            .publish(subject, Headers::new(), payload)
            .await
            .map_err(JsonCallError::from),
        Err(e) => Err(e),
    };
    if sent.is_ok() {
        inner.metrics.broker_contact(inner.clock.now().timestamp());
    }
    log_publish_failure("heartbeat", sent);
}

/// Logs a failed JSON publish: an encoding failure is a bug (warn), a
/// transport failure is expected while offline (debug).
fn log_publish_failure<T>(what: &str, sent: Result<T, JsonCallError>) {
    match sent {
        Ok(_) => {}
        Err(e @ JsonCallError::Transport(_)) => tracing::debug!("{what} not published: {e}"),
        Err(e) => tracing::warn!("{what} not encoded: {e}"),
    }
}

/// Heartbeats on the live config's period, and at once on a config change.
pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    let subject = subjects::heartbeat(&inner.settings.pc_id);
    // The second heartbeat follows the first after a second: a backend
    // still subscribing when the agent started sees it without waiting a
    // whole interval.
    let mut first = true;
    // One registration with `live_changed` for the loop's life, renewed
    // only when it fires: registering and dropping one at every beat
    // rewrote the notifier's waiter list (and its neighbours' entries)
    // each time, for a change that comes once in a blue moon.
    let changed = inner.live_changed.notified();
    tokio::pin!(changed);
    loop {
        publish_heartbeat(&inner, &subject).await;
        // A change from here on cuts the wait short; one that came while
        // the heartbeat went out is in it already (`live_version` tells
        // the two apart).
        let seen = inner.live_version.load(Ordering::SeqCst);
        // Parsed once per config change (when it is resolved), not here.
        let mut period = inner.heartbeat_period().max(Duration::from_secs(1));
        if std::mem::take(&mut first) {
            period = period.min(Duration::from_secs(1));
        }
        let beat = tokio::time::sleep(period);
        tokio::pin!(beat);
        loop {
            tokio::select! {
                biased;
                _ = &mut beat => break,
                _ = &mut changed => {
                    changed.set(inner.live_changed.notified());
                    if inner.live_version.load(Ordering::SeqCst) != seen {
                        break;
                    }
                }
            }
        }
    }
}

/// Publishes the hardware inventory at start and then daily. A report no
/// stream stored (the broker not provisioned yet, or unreachable) is sent
/// again after 30 s, doubling up to 15 minutes, until one is.
pub(crate) async fn inventory_loop(inner: Arc<Inner>) {
    let subject = subjects::inventory(&inner.settings.pc_id, subjects::InventoryKind::Hw);
    let mut retry = Duration::from_secs(30);
    loop {
        let pc = inner.settings.pc_id.as_str().to_owned();
        let at = inner.clock.now();
        let stored = match tokio::task::spawn_blocking(move || {
            crate::presence::collect_hw_inventory(&pc, at)
        })
        .await
        {
            Ok(inventory) => {
                let sent = inner
                    .log
                    .publish_json(&subject, Headers::new(), &inventory)
                    .await;
                let stored = matches!(sent, Ok(Some(_)));
                if let Ok(None) = sent {
                    tracing::debug!("inventory not stored by any stream yet; will send again");
                }
                log_publish_failure("inventory", sent);
                stored
            }
            Err(e) => {
                tracing::warn!("inventory collection failed: {e}");
                false
            }
        };
        if stored {
            retry = Duration::from_secs(30);
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        } else {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(15 * 60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_core::wire::Heartbeat;

    /// The borrowed heartbeat and the wire type give the same bytes, with
    /// every optional field present and with each left out.
    #[test]
    fn the_borrowed_heartbeat_is_the_wire_heartbeat() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:20:30.123456789Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let keys = vec!["k1:abcd".to_owned(), "k2:ef01".to_owned()];
        let full = Heartbeat {
            pc_id: "pc-1".into(),
            at,
            agent_version: "1.2.3".into(),
            hostname: Some("host \"quoted\" é".into()),
            os_family: Some("linux".into()),
            agent_arch: Some("x86_64".into()),
            agent_cpu_pct: Some(1.5),
            agent_rss_bytes: Some(7_000_000),
            enforcing: Some(true),
            command_keys: Some(keys.clone()),
            quarantined_versions: Some(vec!["1.2.2".into()]),
        };
        // Only the required fields.
        let bare: Heartbeat = serde_json::from_str(
            r#"{"pc_id":"pc-2","at":"2026-05-01T10:20:30Z","agent_version":"1.2.3"}"#,
        )
        .expect("a bare heartbeat");
        let empty_keys = Heartbeat {
            command_keys: Some(Vec::new()),
            enforcing: Some(false),
            ..bare.clone()
        };
        for wire in [full, bare, empty_keys] {
            let out = HeartbeatOut {
                pc_id: &wire.pc_id,
                at: wire.at,
                agent_version: &wire.agent_version,
                hostname: wire.hostname.as_deref(),
                os_family: wire.os_family.as_deref(),
                agent_arch: wire.agent_arch.as_deref(),
                agent_cpu_pct: wire.agent_cpu_pct,
                agent_rss_bytes: wire.agent_rss_bytes,
                enforcing: wire.enforcing,
                command_keys: wire.command_keys.as_deref(),
                quarantined_versions: wire.quarantined_versions.clone(),
            };
            let (out, wire) = (serde_json::to_string(&out), serde_json::to_string(&wire));
            assert!(out.is_ok());
            assert_eq!(out.ok(), wire.ok());
        }
    }

    /// A config change sends a heartbeat at once, every time (the wait is
    /// armed again after each), and without one the beats keep the
    /// period: the loop's single registration neither misses a change nor
    /// invents one.
    #[tokio::test(start_paused = true)]
    async fn each_config_change_beats_at_once_and_only_then() {
        use kanade_core::names::SubjectToken;
        use kanade_core::transport::memory::MemoryTransport;
        use kanade_core::transport::{KvConfig, Transport};
        let dir = tempfile::tempdir().expect("tempdir");
        let transport = MemoryTransport::new();
        let mut beats = transport
            .messages()
            .subscribe("heartbeat.>")
            .await
            .expect("subscribe");
        let mut settings =
            crate::AgentSettings::new(SubjectToken::pc("pc-1".to_owned()).expect("pc"), dir.path());
        settings.inventory = false;
        let agent = crate::Agent::builder(settings, Arc::new(transport.clone()))
            .build()
            .expect("agent");
        tokio::spawn(agent.run(std::future::pending()));
        let config = transport
            .key_value(KvConfig::new(kanade_core::names::BUCKET_AGENT_CONFIG))
            .await
            .expect("bucket");
        // The first beat, then the second a second later.
        beats.next().await.expect("first");
        beats.next().await.expect("second");
        for interval in ["1h", "2h", "3h"] {
            let before = tokio::time::Instant::now();
            config
                .put(
                    kanade_core::names::KEY_AGENT_CONFIG_GLOBAL,
                    format!("{{\"heartbeat_interval\":\"{interval}\"}}").into(),
                )
                .await
                .expect("put");
            beats.next().await.expect("a beat for the change");
            assert!(before.elapsed() < Duration::from_secs(1), "{interval}");
        }
        let quiet = tokio::time::timeout(Duration::from_secs(3 * 3600 - 5), beats.next()).await;
        assert!(quiet.is_err(), "no beat before the period");
        tokio::time::timeout(Duration::from_secs(10), beats.next())
            .await
            .expect("the 3 h beat");
    }
}
