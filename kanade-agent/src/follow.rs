//! Following the KV buckets: the agent loads `script_current`,
//! `script_status`, `agent_config`, `agent_groups` and `exec_kills` before it handles a
//! command, then watches them and keeps its live state (and with it the
//! effective config and its groups) current. Also announces the agent's
//! configured groups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_core::names::{
    bucket_ttl, parse_agent_config_group_key, parse_agent_config_pc_key, SubjectToken,
    BUCKET_AGENT_CONFIG, BUCKET_AGENT_GROUPS, BUCKET_EXEC_KILLS, BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS, KEY_AGENT_CONFIG_GLOBAL,
};
use kanade_core::transport::ext::{JsonCallError, KeyValueExt};
use kanade_core::transport::{KeyValue, KvConfig, KvOperation, TransportError};
use kanade_core::wire::{AgentConfigScope, AgentGroups};
use tokio::task::JoinSet;

use crate::state::{Inner, ScriptState};
use crate::AgentError;

/// Records this agent's configured groups in `agent_groups` unless an
/// operator already set its membership, so the backend can count targets.
pub(crate) async fn announce_groups(inner: &Arc<Inner>) {
    if inner.settings.groups.is_empty() {
        return;
    }
    let groups = AgentGroups::new(inner.settings.groups.iter().map(|g| g.to_string()));
    match bucket(inner, BUCKET_AGENT_GROUPS).await {
        Ok(kv) => match kv.create_json(inner.settings.pc_id.as_str(), &groups).await {
            Ok(_) | Err(JsonCallError::Transport(TransportError::AlreadyExists { .. })) => {}
            Err(e) => tracing::debug!("groups not announced: {e}"),
        },
        Err(e) => tracing::debug!("groups not announced: {e}"),
    }
}

async fn bucket(inner: &Inner, name: &str) -> Result<Arc<dyn KeyValue>, TransportError> {
    let mut config = KvConfig::new(name);
    config.history = 1;
    config.ttl = bucket_ttl(name);
    inner.transport.key_value(config).await
}

/// Applies one KV entry to the live state.
fn apply_entry(inner: &Inner, bucket: &str, key: &str, value: Option<&Bytes>) {
    if bucket == BUCKET_EXEC_KILLS {
        return crate::kills::apply_record(inner, key, value);
    }
    let text = value.map(|v| String::from_utf8_lossy(v).trim().to_owned());
    let pc = inner.settings.pc_id.as_str();
    let mut live = inner.live();
    match bucket {
        BUCKET_SCRIPT_CURRENT => set_script(&mut live.scripts, key, |s| &mut s.current, text),
        BUCKET_SCRIPT_STATUS => set_script(&mut live.scripts, key, |s| &mut s.status, text),
        BUCKET_AGENT_GROUPS if key == pc => {
            let groups: AgentGroups = value
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            let mut valid = Vec::new();
            for group in groups.groups() {
                match SubjectToken::group(group.clone()) {
                    Ok(token) => valid.push(token),
                    Err(e) => tracing::warn!("ignoring group: {e}"),
                }
            }
            if valid != live.groups {
                live.groups = valid;
                drop(live);
                inner.groups_changed.notify_waiters();
                inner.recompute_config();
            }
        }
        BUCKET_AGENT_CONFIG => {
            let scope = || -> Option<AgentConfigScope> {
                let parsed = value.map(|v| serde_json::from_slice::<AgentConfigScope>(v));
                match parsed {
                    Some(Ok(scope)) => Some(scope),
                    Some(Err(e)) => {
                        tracing::warn!(key, "ignoring malformed agent_config entry: {e}");
                        None
                    }
                    None => None,
                }
            };
            if key == KEY_AGENT_CONFIG_GLOBAL {
                live.global = scope();
            } else if let Some(group) = parse_agent_config_group_key(key) {
                match scope() {
                    Some(s) => live.group_scopes.insert(group.to_owned(), s),
                    None => live.group_scopes.remove(group),
                };
            } else if parse_agent_config_pc_key(key) == Some(pc) {
                live.pc_scope = scope();
            } else {
                return;
            }
            drop(live);
            inner.recompute_config();
        }
        _ => {}
    }
}

/// Sets or clears one bucket's entry for job `key`; a job with neither
/// entry left is forgotten.
fn set_script(
    scripts: &mut HashMap<String, ScriptState>,
    key: &str,
    field: impl Fn(&mut ScriptState) -> &mut Option<String>,
    value: Option<String>,
) {
    match (scripts.get_mut(key), value) {
        (Some(state), value) => {
            *field(state) = value;
            if state.current.is_none() && state.status.is_none() {
                scripts.remove(key);
            }
        }
        (None, Some(value)) => {
            let mut state = ScriptState::default();
            *field(&mut state) = Some(value);
            scripts.insert(key.to_owned(), state);
        }
        (None, None) => {}
    }
}

const WATCHED: [&str; 5] = [
    BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS,
    BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS,
    BUCKET_EXEC_KILLS,
];

/// Reads the current KV state before any command is handled.
pub(crate) async fn load_kv_state(inner: &Arc<Inner>) -> Result<(), AgentError> {
    for name in WATCHED {
        let kv = bucket(inner, name).await?;
        for key in kv.keys().await? {
            if let Some(entry) = kv.get(&key).await? {
                apply_entry(inner, name, &key, Some(&entry.value));
            }
        }
    }
    inner.recompute_config();
    inner
        .kv_state_loaded
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Returns once the KV state has been read in this process: at once when
/// it was (the agent read it at start, as it does when the broker is
/// there), else reading it, again every second while the broker is away.
/// One waiting command reads it for all. DESIGN §4: the agent loads the
/// followed buckets before it handles a command; a command resumed from
/// the ledger after a restart while the broker was down would otherwise
/// pass its revoke, version-pin and kill checks on an empty view.
pub(crate) async fn kv_state_ready(inner: &Arc<Inner>) {
    use std::sync::atomic::Ordering;
    loop {
        if inner.kv_state_loaded.load(Ordering::SeqCst) {
            return;
        }
        {
            let _reading = inner.kv_state_loading.lock().await;
            if inner.kv_state_loaded.load(Ordering::SeqCst) {
                return;
            }
            match load_kv_state(inner).await {
                Ok(()) => return,
                Err(e) => tracing::debug!("KV state not loaded yet (offline?): {e}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Watches every followed bucket (re-watching a second after a failure)
/// and applies each change to the live state.
pub(crate) async fn watch_kv(inner: Arc<Inner>) {
    let mut watchers = JoinSet::new();
    for name in WATCHED {
        let inner = inner.clone();
        watchers.spawn(async move {
            loop {
                let watch = match bucket(&inner, name).await {
                    Ok(kv) => kv.watch(">").await,
                    Err(e) => Err(e),
                };
                match watch {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            let value =
                                (entry.operation == KvOperation::Put).then_some(&entry.value);
                            apply_entry(&inner, name, &entry.key, value);
                        }
                    }
                    Err(e) => tracing::warn!(bucket = name, "watch failed: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    while watchers.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bucket sets its own half of a job's entry; a job with neither
    /// left is forgotten, and clearing what was never set adds nothing.
    #[test]
    fn a_jobs_script_entries_come_and_go_bucket_by_bucket() {
        let mut scripts = HashMap::new();
        fn current(s: &mut ScriptState) -> &mut Option<String> {
            &mut s.current
        }
        fn status(s: &mut ScriptState) -> &mut Option<String> {
            &mut s.status
        }
        set_script(&mut scripts, "job", current, Some("3".into()));
        set_script(&mut scripts, "job", status, Some("revoked".into()));
        let job = &scripts["job"];
        assert_eq!(job.current.as_deref(), Some("3"));
        assert_eq!(job.status.as_deref(), Some("revoked"));
        set_script(&mut scripts, "job", current, None);
        assert_eq!(scripts["job"].current, None);
        assert_eq!(scripts["job"].status.as_deref(), Some("revoked"));
        set_script(&mut scripts, "job", status, None);
        assert!(scripts.is_empty());
        set_script(&mut scripts, "other", status, None);
        assert!(scripts.is_empty());
    }
}
