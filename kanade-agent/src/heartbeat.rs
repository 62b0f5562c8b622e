//! Presence on the bus: the heartbeat (built from cached process facts,
//! published on the live config's period and on every config change) and
//! the hardware inventory (at start, then daily).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kanade_core::names::subjects;
use kanade_core::transport::ext::{JsonCallError, MessageLogExt};
use kanade_core::transport::Headers;
use kanade_core::wire::Heartbeat;

use crate::state::Inner;

/// This agent's heartbeat now.
fn heartbeat(inner: &Inner) -> Heartbeat {
    let facts = process_facts();
    Heartbeat {
        pc_id: inner.settings.pc_id.as_str().to_owned(),
        at: inner.clock.now(),
        agent_version: inner.settings.agent_version.clone(),
        hostname: facts.hostname,
        os_family: Some(std::env::consts::OS.to_owned()),
        agent_arch: Some(std::env::consts::ARCH.to_owned()),
        agent_cpu_pct: None,
        agent_rss_bytes: facts.rss_bytes,
        enforcing: Some(inner.trust.enforcing()),
        command_keys: inner.trust.fingerprints(),
        quarantined_versions: inner
            .settings
            .self_update
            .as_ref()
            .map(|_| crate::update::quarantined(&inner.settings.state_dir))
            .filter(|list| !list.is_empty()),
    }
}

/// Host name and resident memory as reported in heartbeats.
#[derive(Clone)]
struct ProcessFacts {
    hostname: Option<String>,
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
        hostname: hostname::get()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
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
    let sent = inner
        .log
        .publish_json(subject, Headers::new(), &heartbeat(inner))
        .await;
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
