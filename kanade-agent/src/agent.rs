//! The agent and its run loop: recover, drain, load the KV state, then run
//! the intake, KV watches, heartbeat, ping, kill and outbox-drain tasks
//! until shutdown, and stop the running work.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kanade_core::wire::EffectiveConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::follow::{announce_groups, load_kv_state, watch_kv};
use crate::heartbeat::{heartbeat_loop, inventory_loop};
use crate::intake::{intake, kill_listener, ping_responder};
use crate::ledger::Ledger;
use crate::outbox::Outbox;
use crate::state::Inner;
use crate::AgentError;

/// Why [`Agent::run_until_stopped`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// The shutdown future resolved.
    Shutdown,
    /// A self-update installed `version`: exit (with
    /// `kanade_core::policy::release::EXIT_UPDATED`) for the service
    /// manager to start the new binary.
    Updated {
        /// The version installed.
        version: String,
    },
}

/// An agent, ready to [`run`](Agent::run).
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

impl Agent {
    /// The admission ledger (for inspection and tests).
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The outbox (for inspection and tests).
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The agent's metrics as OpenMetrics text (see [`crate::metrics`]).
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render(crate::metrics::AgentFigures {
            outbox_backlog: self.inner.outbox.backlog().len(),
            in_flight: self.inner.in_flight.load(Ordering::SeqCst),
        })
    }

    /// The effective configuration now.
    pub fn effective_config(&self) -> EffectiveConfig {
        self.inner.live().config.clone()
    }

    /// The concurrency limit now.
    pub fn concurrency_limit(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// Abandons all work at once, reporting nothing — as if the process had
    /// died. For simulations and tests of crash recovery: a new agent on the
    /// same state directory reports what was running as exit 121 and resumes
    /// what had not started.
    pub fn halt(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner
            .executions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }

    /// Runs until `shutdown` resolves. At shutdown, running commands are
    /// killed (their results say so) and given [`SHUTDOWN_GRACE`] to report;
    /// anything still running after that is reported as exit 121 on the
    /// next start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        self.run_until_stopped(shutdown).await.map(|_| ())
    }

    /// [`run`](Agent::run), also stopping (the same way) when a
    /// self-update ([`AgentSettings::self_update`](crate::AgentSettings::self_update))
    /// installed a new binary; says which happened.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Stopped, AgentError> {
        let inner = self.inner;
        let resume = crate::admission::recover(&inner).await;
        inner.outbox.drain().await;
        // Offline at start is normal: the watches catch up when the broker is back.
        if let Err(e) = load_kv_state(&inner).await {
            tracing::warn!("KV state not loaded yet (offline?): {e}");
        }
        announce_groups(&inner).await;
        let mut tasks = JoinSet::new();
        tasks.spawn(drain_loop(inner.clone()));
        tasks.spawn(watch_kv(inner.clone()));
        tasks.spawn(heartbeat_loop(inner.clone()));
        tasks.spawn(ping_responder(inner.clone()));
        tasks.spawn(kill_listener(inner.clone()));
        tasks.spawn(intake(inner.clone()));
        if inner.settings.trust.keys_file.is_some() {
            tasks.spawn(crate::trust::watch_ring(inner.trust.clone()));
        }
        if inner.settings.inventory {
            tasks.spawn(inventory_loop(inner.clone()));
        }
        if let Some(connected) = inner.connected.clone() {
            tasks.spawn(track_connection(inner.clone(), connected));
        }
        if inner.settings.agent_schedules {
            tasks.spawn(crate::agent_schedules::schedule_loop(inner.clone()));
        }
        if inner.settings.self_update.is_some() {
            tasks.spawn(crate::update::confirm_when_healthy(inner.clone()));
            tasks.spawn(crate::update::update_loop(inner.clone()));
        }
        let mut installed = inner.update_installed.subscribe();
        for (command, request) in resume {
            crate::fire::spawn_execute(
                inner.clone(),
                command,
                request,
                crate::kills::Arrival::Resumed,
            );
        }
        let stopped = tokio::select! {
            () = shutdown => Stopped::Shutdown,
            Ok(version) = installed.wait_for(Option::is_some) => Stopped::Updated {
                version: version.clone().unwrap_or_default(),
            },
        };
        inner.closed.store(true, Ordering::SeqCst);
        stop_running_work(&inner).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(stopped)
    }
}

/// How long running commands get to report after being killed at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

async fn stop_running_work(inner: &Arc<Inner>) {
    let switches: Vec<watch::Sender<bool>> = {
        let kills = inner.kills.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<&String> = kills.keys().collect();
        keys.sort();
        keys.into_iter()
            .flat_map(|k| kills[k].iter().cloned())
            .collect()
    };
    for switch in switches {
        let _ = switch.send(true);
    }
    let all_done = inner.all_done.notified();
    if inner.in_flight.load(Ordering::SeqCst) > 0
        && tokio::time::timeout(SHUTDOWN_GRACE, all_done)
            .await
            .is_err()
    {
        tracing::warn!(
            "work still in flight at shutdown: running commands will be reported as 121 and waiting ones resumed on the next start"
        );
    }
    inner
        .executions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .abort_all();
}

async fn track_connection(inner: Arc<Inner>, mut connected: watch::Receiver<bool>) {
    loop {
        let now_connected = *connected.borrow_and_update();
        {
            let mut live = inner.live();
            if now_connected {
                if live.disconnected_since.is_some() {
                    // Back from an outage: the backlog goes out now.
                    inner.outbox.retry_now();
                }
                live.ever_connected = true;
                live.disconnected_since = None;
            } else if live.disconnected_since.is_none() && live.ever_connected {
                live.disconnected_since = Some(inner.clock.now());
            }
        }
        if connected.changed().await.is_err() {
            return;
        }
    }
}

async fn drain_loop(inner: Arc<Inner>) {
    loop {
        inner.outbox.wait_for_backlog().await;
        tokio::time::sleep(inner.settings.drain_interval).await;
        inner.outbox.drain().await;
    }
}
