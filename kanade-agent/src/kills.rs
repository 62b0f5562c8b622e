//! Kills, live and durable. A live `kill.<exec_id>` flips the kill switches
//! of that execution's running commands; the backend also records every
//! kill in the `exec_kills` bucket ([`KillRecord`]), which the agent loads
//! at start and watches. An execution known to be killed never starts
//! here again: a command of it that arrives afterwards (replayed from EXEC
//! after an outage, resumed after a restart, or live) is reported as exit
//! -1, not skipped, "killed before start" — the outcome a kill gives a
//! command caught waiting (DESIGN §7: -1 means killed; a skip would say
//! the operator's gates chose not to run it, which is not what happened).
//!
//! A command that arrives late (replay, resume) is also checked against
//! the bucket directly, so a kill the watch has not delivered yet (the
//! agent just came back) still wins.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kanade_core::names::{exec_kills_config, KILL_RECORD_TTL};
use kanade_core::policy::signature::HEADER_AT;
use kanade_core::transport::{Headers, KeyValue, TransportError};
use kanade_core::wire::KillRecord;

use crate::state::Inner;
use crate::trust::Verdict;

/// How a command reached the fire path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// On a live command subject, as it was published.
    Live,
    /// Late: replayed from EXEC (or built by the agent's own scheduler).
    Late,
    /// Resumed from the ledger at start, perhaps with the broker away: it
    /// starts only once the agent has read its KV state in this process.
    Resumed,
}

/// The `exec_kills` bucket: opened at the first call that can, then kept
/// (a failure to open it is not kept: the next call tries again).
async fn kill_bucket(inner: &Inner) -> Result<Arc<dyn KeyValue>, TransportError> {
    let opened = inner
        .kill_bucket
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(kv) = opened {
        return Ok(kv);
    }
    let kv = inner.transport.key_value(exec_kills_config()).await?;
    *inner.kill_bucket.lock().unwrap_or_else(|p| p.into_inner()) = Some(kv.clone());
    Ok(kv)
}

/// Why a kill is not obeyed on an enforcing host (`None`: obey). A kill's
/// signed body is its execution id, so a signature cannot be moved onto
/// another execution. `now_ms` is when to judge its age: now for a live
/// kill; the signing time for a stored record, which stays valid as long
/// as the bucket keeps it (it can only ever kill the execution it names).
pub(crate) fn kill_refusal(
    inner: &Inner,
    headers: &Headers,
    body: &[u8],
    exec_id: &str,
    now_ms: i64,
) -> Option<String> {
    if !inner.trust.enforcing() {
        return None;
    }
    match inner.trust.check(headers, body, now_ms) {
        Verdict::Refuse(refusal) => Some(refusal.to_string()),
        Verdict::Run { .. } if body != exec_id.as_bytes() => {
            Some(format!("the signed body does not name execution {exec_id}"))
        }
        Verdict::Run { .. } => None,
    }
}

/// Remembers `exec_id` as killed at `at` (forgetting kills older than the
/// bucket's TTL) and flips the kill switches of its running commands.
pub(crate) fn remember(inner: &Inner, exec_id: &str, at: DateTime<Utc>) {
    let now = inner.clock.now();
    let ttl = chrono::Duration::from_std(KILL_RECORD_TTL).unwrap_or_default();
    {
        let mut killed = inner.killed.lock().unwrap_or_else(|p| p.into_inner());
        killed.retain(|_, when| now - *when < ttl);
        killed.insert(exec_id.to_owned(), at);
    }
    let switches = inner
        .kills
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(exec_id)
        .cloned();
    if let Some(switches) = switches {
        tracing::info!(exec_id, count = switches.len(), "kill requested");
        for switch in switches {
            let _ = switch.send(true);
        }
    }
}

/// Checks a stored record (key `key`) and returns the execution it kills.
fn accepted_record(inner: &Inner, key: &str, value: &[u8]) -> Option<KillRecord> {
    let record: KillRecord = match serde_json::from_slice(value) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(key, "ignoring a malformed kill record: {e}");
            return None;
        }
    };
    if record.exec_id != key {
        tracing::warn!(key, "ignoring a kill record filed under another execution");
        return None;
    }
    let headers: Headers = record.signature.clone();
    let signed_at = headers
        .get(HEADER_AT)
        .and_then(|at| at.parse::<i64>().ok())
        .unwrap_or_else(|| inner.clock.now().timestamp_millis());
    if let Some(reason) = kill_refusal(inner, &headers, record.exec_id.as_bytes(), key, signed_at) {
        tracing::warn!(exec_id = key, "kill record ignored: {reason}");
        return None;
    }
    Some(record)
}

/// Applies an `exec_kills` entry (load or watch). Deletions (expiry) are
/// ignored: the memory of a kill lapses with the same TTL.
pub(crate) fn apply_record(inner: &Inner, key: &str, value: Option<&Bytes>) {
    let Some(value) = value else { return };
    if let Some(record) = accepted_record(inner, key, value) {
        remember(inner, &record.exec_id, record.killed_at);
    }
}

/// Whether `exec_id` was killed before this command of it could start:
/// known already, or — for a late arrival — recorded in the bucket. A
/// bucket that cannot be read counts as no kill (the live kill and the
/// watch still stop the run once they arrive).
pub(crate) async fn killed_before_arrival(inner: &Inner, exec_id: &str, arrival: Arrival) -> bool {
    if inner
        .killed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(exec_id)
    {
        return true;
    }
    if arrival == Arrival::Live {
        return false;
    }
    let entry = match kill_bucket(inner).await {
        Ok(kv) => kv.get(exec_id).await,
        Err(e) => Err(e),
    };
    match entry {
        Ok(Some(entry)) => match accepted_record(inner, exec_id, &entry.value) {
            Some(record) => {
                remember(inner, exec_id, record.killed_at);
                true
            }
            None => false,
        },
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(exec_id, "kill record not readable: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_core::names::SubjectToken;
    use kanade_core::transport::memory::MemoryTransport;

    /// The bucket is opened by the first late arrival and the same handle
    /// serves the next ones.
    #[tokio::test]
    async fn late_arrivals_share_one_kill_bucket_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pc = SubjectToken::pc("pc-1".to_owned()).expect("pc");
        let agent = crate::Agent::builder(
            crate::AgentSettings::new(pc, dir.path()),
            Arc::new(MemoryTransport::new()),
        )
        .build()
        .expect("agent");
        let inner = &agent.inner;
        let cached = || inner.kill_bucket.lock().expect("lock").clone();
        assert!(cached().is_none());
        assert!(!killed_before_arrival(inner, "exec-1", Arrival::Live).await);
        assert!(cached().is_none(), "a live arrival reads no bucket");
        assert!(!killed_before_arrival(inner, "exec-1", Arrival::Late).await);
        let first = cached().expect("opened by the late arrival");
        assert!(!killed_before_arrival(inner, "exec-2", Arrival::Late).await);
        assert!(Arc::ptr_eq(&first, &cached().expect("kept")));
    }
}
