//! The agent: builder, live state, and the run loop (intake, KV watches,
//! heartbeat, ping, kill, outbox drain).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kanade_core::names::subjects::{self, agent_command_filters};
use kanade_core::names::{
    parse_agent_config_group_key, parse_agent_config_pc_key, SubjectToken, BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS, BUCKET_SCRIPT_CURRENT, BUCKET_SCRIPT_STATUS, KEY_AGENT_CONFIG_GLOBAL,
    STREAM_EXEC,
};
use kanade_core::policy::config::resolve;
use kanade_core::policy::HostSupport;
use kanade_core::transport::{
    ConsumerConfig, DeliverPolicy, Headers, KeyValue, KvConfig, KvOperation, MessageLog, Transport,
    TransportError,
};
use kanade_core::wire::{AgentConfigScope, AgentGroups, EffectiveConfig, Heartbeat, Shell};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::{Clock, SystemClock};
use crate::ledger::Ledger;
use crate::limiter::Limiter;
use crate::outbox::Outbox;
use crate::runner::{ProcessRunner, ScriptRunner};
use crate::{AgentError, AgentSettings};

/// Header naming where a ping's heartbeat reply goes (the transport
/// contract has no reply subjects, so requests carry one).
pub const REPLY_TO_HEADER: &str = "Kanade-Reply-To";

/// An agent, ready to [`run`](Agent::run).
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

/// Builds an [`Agent`].
pub struct AgentBuilder {
    settings: AgentSettings,
    transport: Arc<dyn Transport>,
    runner: Option<Arc<dyn ScriptRunner>>,
    clock: Option<Arc<dyn Clock>>,
    connected: Option<watch::Receiver<bool>>,
}

/// What the agent knows from the KV buckets.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub script_current: HashMap<String, String>,
    pub script_status: HashMap<String, String>,
    pub global: Option<AgentConfigScope>,
    pub group_scopes: BTreeMap<String, AgentConfigScope>,
    pub pc_scope: Option<AgentConfigScope>,
    pub groups: Vec<SubjectToken>,
    pub config: EffectiveConfig,
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
    pub limiter: Limiter,
    pub live: Mutex<Live>,
    pub live_changed: Notify,
    pub groups_changed: Notify,
    pub kills: Mutex<HashMap<String, Vec<watch::Sender<bool>>>>,
    pub rng: Mutex<fastrand::Rng>,
    connected: Option<watch::Receiver<bool>>,
    cpus: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    all_done: Notify,
    pub(crate) executions: Mutex<JoinSet<()>>,
    /// Set when the agent stops or halts: no new command starts after it
    /// (an admitted one stays pending in the ledger for the next start).
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

/// Counts a command as in flight while alive.
pub(crate) struct InFlight(Arc<Inner>);

impl InFlight {
    pub(crate) fn enter(inner: &Arc<Inner>) -> Self {
        inner
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self
            .0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.all_done.notify_waiters();
        }
    }
}

impl Inner {
    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instant the agent last had fresh state, as the gates want it.
    pub(crate) fn last_fresh_at(&self) -> Option<DateTime<Utc>> {
        let live = self.live();
        match (live.ever_connected, live.disconnected_since) {
            (false, _) => None,
            (true, None) => Some(self.clock.now()),
            (true, Some(since)) => Some(since),
        }
    }

    fn recompute_config(&self) {
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
        live.config = config;
        drop(live);
        self.live_changed.notify_waiters();
    }
}

impl Agent {
    /// Starts building an agent over `transport`.
    pub fn builder(settings: AgentSettings, transport: Arc<dyn Transport>) -> AgentBuilder {
        AgentBuilder {
            settings,
            transport,
            runner: None,
            clock: None,
            connected: None,
        }
    }

    /// The admission ledger (for inspection and tests).
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The outbox (for inspection and tests).
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
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
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner
            .executions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

impl AgentBuilder {
    /// Runs scripts with `runner` instead of spawning processes.
    pub fn runner(mut self, runner: Arc<dyn ScriptRunner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Reads time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Feeds the connection state (true: connected) for strict staleness.
    /// Without it the agent counts itself always connected.
    pub fn connection_state(mut self, connected: watch::Receiver<bool>) -> Self {
        self.connected = Some(connected);
        self
    }

    /// Opens the state directory and builds the agent.
    pub fn build(self) -> Result<Agent, AgentError> {
        let settings = self.settings;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let runner = self
            .runner
            .unwrap_or_else(|| Arc::new(ProcessRunner::default()));
        let log = self.transport.messages();
        let ledger = Ledger::open(&settings.state_dir.join("ledger"), clock.now())?;
        let outbox = Outbox::open(&settings.state_dir.join("outbox"), log.clone())?;
        std::fs::create_dir_all(settings.state_dir.join("scripts"))
            .map_err(|e| AgentError::io("creating script cache", &settings.state_dir, e))?;
        let host = HostSupport {
            shells: Shell::ALL
                .into_iter()
                .filter(|s| runner.supports(*s))
                .collect(),
            interactive_sessions: settings.interactive_sessions,
        };
        let cpus = settings
            .default_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let rng = match settings.jitter_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let live = Live {
            groups: settings.groups.clone(),
            ever_connected: self.connected.is_none(),
            ..Live::default()
        };
        Ok(Agent {
            inner: Arc::new(Inner {
                transport: self.transport,
                log,
                runner,
                clock,
                host,
                ledger,
                outbox,
                limiter: Limiter::new(cpus),
                live: Mutex::new(live),
                live_changed: Notify::new(),
                groups_changed: Notify::new(),
                kills: Mutex::new(HashMap::new()),
                rng: Mutex::new(rng),
                connected: self.connected,
                cpus,
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                all_done: Notify::new(),
                executions: Mutex::new(JoinSet::new()),
                closed: std::sync::atomic::AtomicBool::new(false),
                settings,
            }),
        })
    }
}

impl Agent {
    /// Runs until `shutdown` resolves. At shutdown, running commands are
    /// killed (their results say so) and given [`SHUTDOWN_GRACE`] to report;
    /// anything still running after that is reported as exit 121 on the
    /// next start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let inner = self.inner;
        let resume = crate::fire::recover(&inner).await;
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
        if inner.settings.inventory {
            tasks.spawn(inventory_loop(inner.clone()));
        }
        if let Some(connected) = inner.connected.clone() {
            tasks.spawn(track_connection(inner.clone(), connected));
        }
        for (command, request) in resume {
            crate::fire::spawn_execute(inner.clone(), command, request);
        }
        shutdown.await;
        inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        stop_running_work(&inner).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Ack wait of the agent's EXEC replay consumer.
pub const REPLAY_ACK_WAIT: Duration = Duration::from_secs(5);

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
    if inner.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
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

/// Records this agent's configured groups in `agent_groups` unless an
/// operator already set its membership, so the backend can count targets.
async fn announce_groups(inner: &Arc<Inner>) {
    if inner.settings.groups.is_empty() {
        return;
    }
    let groups = AgentGroups::new(inner.settings.groups.iter().map(|g| g.to_string()));
    let Ok(body) = serde_json::to_vec(&groups) else {
        return;
    };
    match bucket(inner, BUCKET_AGENT_GROUPS).await {
        Ok(kv) => match kv
            .create(inner.settings.pc_id.as_str(), Bytes::from(body))
            .await
        {
            Ok(_) | Err(TransportError::AlreadyExists { .. }) => {}
            Err(e) => tracing::debug!("groups not announced: {e}"),
        },
        Err(e) => tracing::debug!("groups not announced: {e}"),
    }
}

async fn track_connection(inner: Arc<Inner>, mut connected: watch::Receiver<bool>) {
    loop {
        let now_connected = *connected.borrow_and_update();
        {
            let mut live = inner.live();
            if now_connected {
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

async fn bucket(inner: &Inner, name: &str) -> Result<Arc<dyn KeyValue>, TransportError> {
    let mut config = KvConfig::new(name);
    config.history = 1;
    inner.transport.key_value(config).await
}

/// Applies one KV entry to the live state.
fn apply_entry(inner: &Inner, bucket: &str, key: &str, value: Option<&Bytes>) {
    let text = value.map(|v| String::from_utf8_lossy(v).trim().to_owned());
    let pc = inner.settings.pc_id.as_str();
    let mut live = inner.live();
    match bucket {
        BUCKET_SCRIPT_CURRENT => set_or_remove(&mut live.script_current, key, text),
        BUCKET_SCRIPT_STATUS => set_or_remove(&mut live.script_status, key, text),
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

fn set_or_remove(map: &mut HashMap<String, String>, key: &str, value: Option<String>) {
    match value {
        Some(v) => map.insert(key.to_owned(), v),
        None => map.remove(key),
    };
}

const WATCHED: [&str; 4] = [
    BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS,
    BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS,
];

/// Reads the current KV state before any command is handled.
async fn load_kv_state(inner: &Arc<Inner>) -> Result<(), AgentError> {
    for name in WATCHED {
        let kv = bucket(inner, name).await?;
        for key in kv.keys().await? {
            if let Some(entry) = kv.get(&key).await? {
                apply_entry(inner, name, &key, Some(&entry.value));
            }
        }
    }
    inner.recompute_config();
    Ok(())
}

async fn watch_kv(inner: Arc<Inner>) {
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

pub(crate) fn heartbeat(inner: &Inner) -> Heartbeat {
    Heartbeat {
        pc_id: inner.settings.pc_id.to_string(),
        at: inner.clock.now(),
        agent_version: inner.settings.agent_version.clone(),
        hostname: process_facts().hostname,
        os_family: Some(std::env::consts::OS.to_owned()),
        agent_arch: Some(std::env::consts::ARCH.to_owned()),
        agent_cpu_pct: None,
        agent_rss_bytes: process_facts().rss_bytes,
        enforcing: Some(false),
        command_keys: None,
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

async fn publish_heartbeat(inner: &Inner, subject: &str) {
    match serde_json::to_vec(&heartbeat(inner)) {
        Ok(body) => {
            if let Err(e) = inner
                .log
                .publish(subject, Headers::new(), Bytes::from(body))
                .await
            {
                tracing::debug!("heartbeat not published: {e}");
            }
        }
        Err(e) => tracing::warn!("heartbeat not encoded: {e}"),
    }
}

async fn heartbeat_loop(inner: Arc<Inner>) {
    let subject = subjects::heartbeat(&inner.settings.pc_id);
    loop {
        publish_heartbeat(&inner, &subject).await;
        let changed = inner.live_changed.notified();
        let period = inner
            .live()
            .config
            .heartbeat_period()
            .max(Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = tokio::time::sleep(period) => {}
            _ = changed => {}
        }
    }
}

/// Publishes the hardware inventory at start and then daily.
async fn inventory_loop(inner: Arc<Inner>) {
    let subject = subjects::inventory(&inner.settings.pc_id, subjects::InventoryKind::Hw);
    loop {
        let pc = inner.settings.pc_id.to_string();
        let at = inner.clock.now();
        match tokio::task::spawn_blocking(move || crate::presence::collect_hw_inventory(&pc, at))
            .await
        {
            Ok(inventory) => match serde_json::to_vec(&inventory) {
                Ok(body) => {
                    if let Err(e) = inner
                        .log
                        .publish(&subject, Headers::new(), Bytes::from(body))
                        .await
                    {
                        tracing::debug!("inventory not published: {e}");
                    }
                }
                Err(e) => tracing::warn!("inventory not encoded: {e}"),
            },
            Err(e) => tracing::warn!("inventory collection failed: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    }
}

/// Subscribes to `subject`, retrying every second until it works.
async fn subscribe_retrying(inner: &Inner, subject: &str) -> kanade_core::transport::Subscription {
    loop {
        match inner.log.subscribe(subject).await {
            Ok(sub) => return sub,
            Err(e) => {
                tracing::warn!(subject, "cannot subscribe yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn ping_responder(inner: Arc<Inner>) {
    let subject = subjects::ping(&inner.settings.pc_id);
    let default_reply = subjects::heartbeat(&inner.settings.pc_id);
    loop {
        let mut pings = subscribe_retrying(&inner, &subject).await;
        while let Some(ping) = pings.next().await {
            let reply = ping
                .headers
                .get(REPLY_TO_HEADER)
                .cloned()
                .unwrap_or_else(|| default_reply.clone());
            publish_heartbeat(&inner, &reply).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn kill_listener(inner: Arc<Inner>) {
    loop {
        let mut kills = subscribe_retrying(&inner, "kill.*").await;
        listen_for_kills(&inner, &mut kills).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_for_kills(inner: &Arc<Inner>, kills: &mut kanade_core::transport::Subscription) {
    while let Some(message) = kills.next().await {
        let exec_id = message
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let switches = inner
            .kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&exec_id)
            .cloned();
        if let Some(switches) = switches {
            tracing::info!(exec_id, count = switches.len(), "kill requested");
            for switch in switches {
                let _ = switch.send(true);
            }
        }
    }
}

/// Subscribes to the command subjects and replays EXEC; rebuilds both when
/// the groups change.
async fn intake(inner: Arc<Inner>) {
    loop {
        let changed = inner.groups_changed.notified();
        let groups = inner.live().groups.clone();
        let filters = agent_command_filters(&inner.settings.pc_id, &groups);
        let mut sources = JoinSet::new();
        for filter in filters.clone() {
            let inner = inner.clone();
            // Retried until it works: an agent may start while offline.
            sources.spawn(async move {
                loop {
                    let mut sub = subscribe_retrying(&inner, &filter).await;
                    while let Some(message) = sub.next().await {
                        let inner = inner.clone();
                        tokio::spawn(
                            async move { crate::fire::handle(inner, message.payload).await },
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        if inner.settings.replay {
            let inner = inner.clone();
            sources.spawn(replay(inner, filters));
        }
        changed.await;
        sources.abort_all();
    }
}

/// Replays EXEC through the agent's durable consumer (created, and
/// re-created after errors, until it works).
async fn replay(inner: Arc<Inner>, filters: Vec<String>) {
    let mut config = ConsumerConfig::new(
        format!("agent_{}", inner.settings.pc_id),
        DeliverPolicy::LastPerSubject,
    );
    config.filter_subjects = filters;
    // The agent acks right after admission, so a short ack wait costs
    // nothing — and a delivery lost on a dropped link comes back before
    // EXEC (one command per subject) supersedes it.
    config.ack_wait = REPLAY_ACK_WAIT;
    let consumer = loop {
        match inner.log.create_consumer(STREAM_EXEC, config.clone()).await {
            Ok(consumer) => break consumer,
            Err(TransportError::NotFound { .. }) => {
                tracing::info!(
                    "no EXEC stream: live delivery only (provision the transport for replay)"
                );
                return;
            }
            Err(e) => {
                tracing::debug!("replay consumer not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        match consumer.next().await {
            Ok(delivery) => {
                // Admission is what must not be lost; the run itself is
                // tracked by the ledger.
                crate::fire::admit_and_spawn(inner.clone(), delivery.message.payload.clone()).await;
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::debug!("replay consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
