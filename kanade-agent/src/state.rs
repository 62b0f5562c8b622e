//! The agent's shared state: what every task of a running agent reads and
//! updates ([`Inner`]), what it knows from the KV buckets ([`Live`]), and
//! the in-flight count that shutdown waits on ([`InFlight`]).
//!
//! A leaf: the run loop, the fire path and the KV followers all build on
//! it, and it knows none of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use kanade_core::names::SubjectToken;
use kanade_core::policy::clock;
use kanade_core::policy::config::resolve;
use kanade_core::policy::HostSupport;
use kanade_core::transport::{MessageLog, Transport};
use kanade_core::wire::{AgentConfigScope, EffectiveConfig};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::limiter::Limiter;
use crate::outbox::Outbox;
use crate::runner::ScriptRunner;
use crate::AgentSettings;

/// A job's entries in the `script_current` and `script_status` buckets.
#[derive(Debug, Default)]
pub(crate) struct ScriptState {
    /// The version it is pinned to.
    pub current: Option<String>,
    /// `revoked` or another status.
    pub status: Option<String>,
}

/// What the agent knows from the KV buckets.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Each job's `script_current` and `script_status` entries, by job
    /// id: one map, so the gates find both with one lookup.
    pub scripts: HashMap<String, ScriptState>,
    pub global: Option<AgentConfigScope>,
    pub group_scopes: BTreeMap<String, AgentConfigScope>,
    pub pc_scope: Option<AgentConfigScope>,
    pub groups: Vec<SubjectToken>,
    pub config: EffectiveConfig,
    /// `config`'s heartbeat period, parsed when the config was resolved
    /// (`None` until then: the default config's period applies).
    pub heartbeat_period: Option<std::time::Duration>,
    /// When the agent last had fresh state (None: connected now).
    pub disconnected_since: Option<DateTime<Utc>>,
    pub ever_connected: bool,
}

pub(crate) struct Inner {
    pub settings: AgentSettings,
    pub transport: Arc<dyn Transport>,
    pub log: Arc<dyn MessageLog>,
    pub runner: Arc<dyn ScriptRunner>,
    pub clock: Arc<dyn Clock>,
    pub host: HostSupport,
    pub ledger: Ledger,
    pub outbox: Outbox,
    /// Where the ledger, outbox, registration and script cache live.
    pub files: Arc<dyn crate::state_files::StateFiles>,
    pub limiter: Limiter,
    pub live: Mutex<Live>,
    pub live_changed: Notify,
    /// How many times the live config was resolved: raised just before
    /// each `live_changed` notification, so a waiter that keeps one
    /// registration across rounds can tell a change it has not acted on
    /// from one it has.
    pub live_version: AtomicU64,
    pub groups_changed: Notify,
    pub kills: Mutex<HashMap<String, Vec<watch::Sender<bool>>>>,
    /// When this agent instance was built (its clock): the first start's,
    /// for a brand-new agent's registration.
    pub started_at: DateTime<Utc>,
    /// This host's clock offset from the backend's, estimated from live
    /// commands.
    pub clock_offset: Mutex<clock::OffsetEstimate>,
    /// Executions known to be killed, with when (see `kills`).
    pub killed: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The `exec_kills` bucket once opened: a command arriving late reads
    /// its kill record there, and opening the bucket each time cost a
    /// lookup (a stream-info request on NATS) per command.
    pub kill_bucket: Mutex<Option<Arc<dyn kanade_core::transport::KeyValue>>>,
    pub rng: Mutex<fastrand::Rng>,
    pub connected: Option<watch::Receiver<bool>>,
    pub trust: Arc<crate::trust::Trust>,
    pub cpus: usize,
    pub in_flight: AtomicUsize,
    pub all_done: Notify,
    pub executions: Mutex<JoinSet<()>>,
    /// Set when the agent stops or halts: no new command starts after it
    /// (an admitted one stays pending in the ledger for the next start).
    pub closed: AtomicBool,
    /// The version a self-update installed (the agent then stops).
    pub update_installed: watch::Sender<Option<String>>,
    /// Set once the KV state (script versions and statuses, config,
    /// groups, kill records) has been read in this process
    /// (`follow::load_kv_state`): until then no command resumed from the
    /// ledger starts, so a revoke, pin or kill that came before a restart
    /// still wins.
    pub kv_state_loaded: AtomicBool,
    /// Held by the one command that reads the KV state for the others
    /// waiting on it (`follow::kv_state_ready`).
    pub kv_state_loading: tokio::sync::Mutex<()>,
    /// What `--metrics-listen` reports.
    pub metrics: crate::metrics::AgentMetrics,
}

/// Counts a command as in flight while alive.
pub(crate) struct InFlight(Arc<Inner>);

impl InFlight {
    pub(crate) fn enter(inner: &Arc<Inner>) -> Self {
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.all_done.notify_waiters();
        }
    }
}

impl Inner {
    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The heartbeat period of the config in force.
    pub(crate) fn heartbeat_period(&self) -> std::time::Duration {
        let live = self.live();
        live.heartbeat_period
            .unwrap_or_else(|| live.config.heartbeat_period())
    }

    /// Takes a clock-offset sample from a command received live (see
    /// `kanade_core::policy::clock`), warning when the skew becomes large
    /// or ends.
    pub(crate) fn sample_clock_offset(&self, issued_at: DateTime<Utc>, received_at: DateTime<Utc>) {
        let mut estimate = self.clock_offset.lock().unwrap_or_else(|p| p.into_inner());
        let was_large = estimate.offset().is_some_and(clock::is_large);
        let offset = estimate.sample(issued_at, received_at);
        let large = clock::is_large(offset);
        if large && !was_large {
            tracing::warn!(
                offset_ms = offset.num_milliseconds(),
                "this host's clock is off from the backend's; deadlines are judged by the backend's clock"
            );
        } else if was_large && !large {
            tracing::info!(
                offset_ms = offset.num_milliseconds(),
                "clock skew back within bounds"
            );
        }
    }

    /// Whether no live command has shown the clock offset yet.
    pub(crate) fn clock_offset_unknown(&self) -> bool {
        self.clock_offset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offset()
            .is_none()
    }

    /// The backend's clock at this agent's `now`, as estimated, for a
    /// command issued at `issued_at` (see `OffsetEstimate::fleet_now_for`).
    pub(crate) fn fleet_now(
        &self,
        now: DateTime<Utc>,
        issued_at: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        self.clock_offset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fleet_now_for(now, issued_at)
    }

    /// The instant the agent last had fresh state, as the gates want it.
    /// (`live`: the live state, locked by the caller.)
    pub(crate) fn last_fresh_at(&self, live: &Live) -> Option<DateTime<Utc>> {
        match (live.ever_connected, live.disconnected_since) {
            (false, _) => None,
            (true, None) => Some(self.clock.now()),
            (true, Some(since)) => Some(since),
        }
    }

    /// Resolves the effective config from the scopes now known, applies
    /// its concurrency limit and wakes whoever waits on a change.
    pub(crate) fn recompute_config(&self) {
        let mut live = self.live();
        let groups: Vec<String> = live.groups.iter().map(|g| g.to_string()).collect();
        let config = resolve(
            live.global.as_ref(),
            &live.group_scopes,
            &groups,
            live.pc_scope.as_ref(),
        );
        self.limiter.set_limit(
            config
                .max_local_concurrent
                .map_or(self.cpus, |limit| limit.get() as usize),
        );
        live.heartbeat_period = Some(config.heartbeat_period());
        live.config = config;
        drop(live);
        self.live_version.fetch_add(1, Ordering::SeqCst);
        self.live_changed.notify_waiters();
    }
}
