//! Presence on the bus: the heartbeat (built from cached process facts,
//! published on the live config's period and on every config change) and
//! the hardware inventory (at start, then daily).

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
    loop {
        publish_heartbeat(&inner, &subject).await;
        let changed = inner.live_changed.notified();
        // Parsed once per config change (when it is resolved), not here.
        let mut period = inner.heartbeat_period().max(Duration::from_secs(1));
        if std::mem::take(&mut first) {
            period = period.min(Duration::from_secs(1));
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep(period) => {}
            _ = changed => {}
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
}
