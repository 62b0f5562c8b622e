//! The [`Backend`]: catalogue, fan-out, stop layers and the projectors that
//! fill the SQLite store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use kanade_core::names::subjects;
use kanade_core::names::{
    SubjectToken, TokenKind, ALL_STREAMS, BUCKET_AGENT_GROUPS, BUCKET_JOBS, BUCKET_JOBS_YAML,
    BUCKET_SCHEDULES, BUCKET_SCHEDULES_YAML, BUCKET_SCRIPT_CURRENT, BUCKET_SCRIPT_STATUS,
    OBJECT_RESULT_OUTPUT, OBJECT_SCRIPTS, SCRIPT_STATUS_ACTIVE, SCRIPT_STATUS_REVOKED,
    STREAM_EVENTS, STREAM_RESULTS,
};
use kanade_core::transport::{
    ConsumerConfig, DeliverPolicy, Headers, KeyValue, KvConfig, MessageLog, ObjectStoreConfig,
    StreamConfig, Transport, TransportError,
};
use kanade_core::wire::{AgentGroups, Command, EventStarted, ExecResult, Heartbeat};
use tokio::io::AsyncReadExt;

use crate::db::{Db, DbError, ExecutionRow, OverdueRun};
use crate::manifest::{parse_job, parse_schedule, Job, ManifestErrors, Schedule, Target};

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The manifest is invalid.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestErrors),
    /// No such job, schedule or execution.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a schedule lowers onto a command.
#[derive(Debug, Clone, Default)]
pub struct FireOptions {
    /// Start deadline (from `starting_deadline`).
    pub deadline_at: Option<chrono::DateTime<Utc>>,
    /// Retry (from `on_failure.retry`).
    pub retry: Option<kanade_core::wire::RetrySpec>,
    /// Jitter cap in seconds (from `jitter`).
    pub jitter_secs: Option<u64>,
    /// Use this execution id (the scheduler records it before firing).
    pub exec_id: Option<String>,
}

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// SQLite file.
    pub db_path: PathBuf,
    /// An agent is online if it sent a heartbeat this recently.
    pub online_window: Duration,
    /// Extra time past a command's timeout before a silent run is reaped.
    pub reap_grace: Duration,
    /// How often the reaper looks.
    pub reap_interval: Duration,
    /// Run SQLite calls on the calling task instead of tokio's blocking
    /// pool. Only for single-threaded simulations (it makes them
    /// deterministic and avoids a thread hand-off per call); a server keeps
    /// the default, `false`.
    pub inline_database: bool,
}

impl BackendSettings {
    /// Defaults with the database at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            db_path: db_path.into(),
            online_window: Duration::from_secs(90),
            reap_grace: Duration::from_secs(120),
            reap_interval: Duration::from_secs(30),
            inline_database: false,
        }
    }
}

/// The backend; cheap to clone.
#[derive(Clone)]
pub struct Backend {
    transport: Arc<dyn Transport>,
    log: Arc<dyn MessageLog>,
    db: Db,
    settings: BackendSettings,
    now: NowFn,
    new_id: IdFn,
}

/// Where the backend reads "now" from (the system clock unless a simulation
/// supplies its own).
pub type NowFn = Arc<dyn Fn() -> chrono::DateTime<Utc> + Send + Sync>;

/// Where the backend gets fresh execution and request ids (random UUIDs
/// unless a simulation supplies a deterministic source).
pub type IdFn = Arc<dyn Fn() -> String + Send + Sync>;

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs database work on the blocking pool, or inline on the calling task
/// when `inline` (a single-threaded simulation: deterministic, no thread
/// hand-offs).
async fn run_db<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, BackendError> {
    if inline {
        return work().map_err(BackendError::from);
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackendError::Invalid(format!("database task failed: {e}")))?
        .map_err(BackendError::from)
}

impl Backend {
    /// Opens the database and makes sure kanade's streams exist.
    pub async fn open(
        transport: Arc<dyn Transport>,
        settings: BackendSettings,
    ) -> Result<Self, BackendError> {
        let log = transport.messages();
        for spec in &ALL_STREAMS {
            log.create_stream(StreamConfig::from_spec(spec)).await?;
        }
        let path = settings.db_path.clone();
        let db = run_db(settings.inline_database, move || Db::open(&path)).await?;
        Ok(Self {
            transport,
            log,
            db,
            settings,
            now: Arc::new(Utc::now),
            new_id: Arc::new(random_id),
        })
    }

    /// The same backend reading time from `now` (online windows, creation
    /// times, the reaper, and the default scheduler clock).
    pub fn with_clock(mut self, now: NowFn) -> Self {
        self.now = now;
        self
    }

    /// The same backend taking execution and request ids from `new_id`.
    pub fn with_ids(mut self, new_id: IdFn) -> Self {
        self.new_id = new_id;
        self
    }

    /// The backend's current time.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        (self.now)()
    }

    /// The backend's clock, for components that run beside it.
    pub fn clock(&self) -> NowFn {
        self.now.clone()
    }

    /// A fresh id from the backend's id source.
    pub fn new_id(&self) -> String {
        (self.new_id)()
    }

    /// Runs database work as the settings say (see
    /// [`BackendSettings::inline_database`]).
    pub(crate) async fn run_db<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, BackendError> {
        run_db(self.settings.inline_database, work).await
    }

    /// The SQLite store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The instant before which an agent counts as offline.
    pub fn online_since(&self) -> chrono::DateTime<Utc> {
        self.now() - chrono::Duration::from_std(self.settings.online_window).unwrap_or_default()
    }

    async fn bucket(&self, name: &str) -> Result<Arc<dyn KeyValue>, BackendError> {
        let mut config = KvConfig::new(name);
        config.history = 5;
        Ok(self.transport.key_value(config).await?)
    }

    /// Validates and stores a job: JSON in `jobs`, the YAML verbatim in
    /// `jobs_yaml`, the script body in `scripts` as `<id>/<version>`.
    pub async fn apply_job(
        &self,
        yaml: &str,
        script_files: &BTreeMap<String, String>,
    ) -> Result<Job, BackendError> {
        let mut job = parse_job(yaml, script_files)?;
        if let Some(body) = job.execute.script.take() {
            let store = self
                .transport
                .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
                .await?;
            let key = format!("{}/{}", job.id, job.version);
            store.put(&key, &mut body.as_bytes()).await?;
            job.execute.script_file = None;
            job.execute.script_object = Some(key);
        }
        let json = serde_json::to_vec(&job).map_err(|e| BackendError::Invalid(e.to_string()))?;
        self.bucket(BUCKET_JOBS)
            .await?
            .put(&job.id, Bytes::from(json))
            .await?;
        self.bucket(BUCKET_JOBS_YAML)
            .await?
            .put(&job.id, Bytes::from(yaml.to_owned()))
            .await?;
        // The applied version becomes current; an operator `pin` overrides it.
        self.bucket(BUCKET_SCRIPT_CURRENT)
            .await?
            .put(&job.id, Bytes::from(job.version.clone()))
            .await?;
        let status = self.bucket(BUCKET_SCRIPT_STATUS).await?;
        if status.get(&job.id).await?.is_none() {
            status
                .put(&job.id, Bytes::from_static(SCRIPT_STATUS_ACTIVE.as_bytes()))
                .await?;
        }
        Ok(job)
    }

    /// Every job.
    pub async fn jobs(&self) -> Result<Vec<Job>, BackendError> {
        let bucket = self.bucket(BUCKET_JOBS).await?;
        let mut jobs = Vec::new();
        for key in bucket.keys().await? {
            if let Some(entry) = bucket.get(&key).await? {
                match serde_json::from_slice(&entry.value) {
                    Ok(job) => jobs.push(job),
                    Err(e) => tracing::warn!(key, "unreadable job: {e}"),
                }
            }
        }
        Ok(jobs)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job, BackendError> {
        let entry = self
            .bucket(BUCKET_JOBS)
            .await?
            .get(id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("job {id}")))?;
        serde_json::from_slice(&entry.value)
            .map_err(|e| BackendError::Invalid(format!("job {id} unreadable: {e}")))
    }

    /// Validates and stores a schedule (fired by the scheduler).
    pub async fn apply_schedule(&self, yaml: &str) -> Result<Schedule, BackendError> {
        let schedule = parse_schedule(yaml)?;
        self.job(&schedule.job_id).await.map_err(|_| {
            BackendError::Invalid(format!(
                "schedule {} names job {} which does not exist",
                schedule.id, schedule.job_id
            ))
        })?;
        let json =
            serde_json::to_vec(&schedule).map_err(|e| BackendError::Invalid(e.to_string()))?;
        self.bucket(BUCKET_SCHEDULES)
            .await?
            .put(&schedule.id, Bytes::from(json))
            .await?;
        self.bucket(BUCKET_SCHEDULES_YAML)
            .await?
            .put(&schedule.id, Bytes::from(yaml.to_owned()))
            .await?;
        Ok(schedule)
    }

    /// One schedule.
    pub async fn schedule(&self, id: &str) -> Result<Schedule, BackendError> {
        let entry = self
            .bucket(BUCKET_SCHEDULES)
            .await?
            .get(id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("schedule {id}")))?;
        serde_json::from_slice(&entry.value)
            .map_err(|e| BackendError::Invalid(format!("schedule {id} unreadable: {e}")))
    }

    /// Turns a schedule on or off (takes effect at the next tick).
    pub async fn set_schedule_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Schedule, BackendError> {
        let mut schedule = self.schedule(id).await?;
        schedule.enabled = enabled;
        let json =
            serde_json::to_vec(&schedule).map_err(|e| BackendError::Invalid(e.to_string()))?;
        self.bucket(BUCKET_SCHEDULES)
            .await?
            .put(id, Bytes::from(json))
            .await?;
        Ok(schedule)
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, BackendError> {
        let bucket = self.bucket(BUCKET_SCHEDULES).await?;
        let mut out = Vec::new();
        for key in bucket.keys().await? {
            if let Some(entry) = bucket.get(&key).await? {
                if let Ok(schedule) = serde_json::from_slice(&entry.value) {
                    out.push(schedule);
                }
            }
        }
        Ok(out)
    }

    /// The online agents a target addresses.
    pub async fn target_pcs(&self, target: &Target) -> Result<Vec<String>, BackendError> {
        let since = self.online_since();
        let db = self.db.clone();
        let online: Vec<String> = self
            .run_db(move || db.agents(since))
            .await?
            .into_iter()
            .filter(|a| a.online)
            .map(|a| a.pc_id)
            .collect();
        if target.all {
            return Ok(online);
        }
        let groups = self.bucket(BUCKET_AGENT_GROUPS).await?;
        let mut pcs = Vec::new();
        for pc in online {
            let in_pcs = target.pcs.contains(&pc);
            let in_groups = match groups.get(&pc).await? {
                Some(entry) => serde_json::from_slice::<AgentGroups>(&entry.value)
                    .map(|g| target.groups.iter().any(|t| g.contains(t)))
                    .unwrap_or(false),
                None => false,
            };
            if in_pcs || in_groups {
                pcs.push(pc);
            }
        }
        Ok(pcs)
    }

    /// Runs a job now on `target`: pins its version, publishes one command
    /// and records the execution.
    pub async fn exec(&self, job_id: &str, target: &Target) -> Result<ExecutionRow, BackendError> {
        self.fire(job_id, target, FireOptions::default()).await
    }

    /// [`Backend::exec`] with the options a schedule lowers onto the command.
    pub async fn fire(
        &self,
        job_id: &str,
        target: &Target,
        options: FireOptions,
    ) -> Result<ExecutionRow, BackendError> {
        let job = self.job(job_id).await?;
        if job.require_approval {
            return Err(BackendError::Invalid(format!(
                "job {job_id} requires approval, and this backend has no approval workflow yet: refusing to run it"
            )));
        }
        if !target.all && target.groups.is_empty() && target.pcs.is_empty() {
            return Err(BackendError::Invalid(
                "the target names no agents: use all, groups or pcs".into(),
            ));
        }
        let mut subjects_to = Vec::new();
        if target.all {
            subjects_to.push(subjects::COMMANDS_ALL.to_owned());
        }
        for group in &target.groups {
            let token = SubjectToken::group(group.clone())
                .map_err(|e| BackendError::Invalid(e.to_string()))?;
            subjects_to.push(subjects::commands_group(&token));
        }
        for pc in &target.pcs {
            let token =
                SubjectToken::pc(pc.clone()).map_err(|e| BackendError::Invalid(e.to_string()))?;
            subjects_to.push(subjects::commands_pc(&token));
        }
        let object =
            job.execute.script_object.clone().ok_or_else(|| {
                BackendError::Invalid(format!("job {job_id} has no stored script"))
            })?;
        let info = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
            .await?
            .info(&object)
            .await?;
        let timeout =
            humantime::parse_duration(&job.execute.timeout).unwrap_or(Duration::from_secs(60));
        let exec_id = options.exec_id.clone().unwrap_or_else(|| self.new_id());
        let request_id = self.new_id();
        let command = Command {
            id: job.id.clone(),
            version: job.version.clone(),
            request_id: request_id.clone(),
            exec_id: Some(exec_id.clone()),
            shell: job.execute.shell,
            script: String::new(),
            script_object: Some(object),
            script_object_sha256: Some(info.sha256),
            timeout_secs: timeout.as_secs().max(1),
            jitter_secs: options.jitter_secs,
            run_as: job.execute.run_as,
            cwd: job.execute.cwd.clone(),
            deadline_at: options.deadline_at,
            staleness: job.staleness.clone(),
            emit: job.emit,
            check: job.check.clone(),
            retry: options.retry,
        };
        let targeted = self.target_pcs(target).await?.len() as i64;
        let row = ExecutionRow {
            exec_id: exec_id.clone(),
            job_id: job.id.clone(),
            version: job.version.clone(),
            request_id,
            target: serde_json::to_string(target).unwrap_or_default(),
            targeted,
            status: if targeted == 0 {
                "completed".into()
            } else {
                "pending".into()
            },
            created_at: self.now().to_rfc3339(),
            started: 0,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            reap_after_secs: (timeout + self.settings.reap_grace).as_secs() as i64,
        };
        let db = self.db.clone();
        let insert = row.clone();
        self.run_db(move || db.insert_execution(&insert)).await?;
        // The version pin is written before the command goes out, unless an
        // operator pinned one (then agents skip other versions with 124).
        let current = self.bucket(BUCKET_SCRIPT_CURRENT).await?;
        if current.get(&job.id).await?.is_none() {
            current
                .put(&job.id, Bytes::from(job.version.clone()))
                .await?;
        }
        let payload = Bytes::from(
            serde_json::to_vec(&command).map_err(|e| BackendError::Invalid(e.to_string()))?,
        );
        for subject in subjects_to {
            if let Err(e) = self
                .log
                .publish(&subject, Headers::new(), payload.clone())
                .await
            {
                let db = self.db.clone();
                let id = exec_id.clone();
                let _ = self.run_db(move || db.set_status(&id, "failed")).await;
                return Err(e.into());
            }
        }
        Ok(row)
    }

    /// Stops a job everywhere: agents skip it with 126.
    pub async fn revoke(&self, job_id: &str) -> Result<(), BackendError> {
        self.job(job_id).await?;
        self.bucket(BUCKET_SCRIPT_STATUS)
            .await?
            .put(job_id, Bytes::from_static(SCRIPT_STATUS_REVOKED.as_bytes()))
            .await?;
        Ok(())
    }

    /// Lets a revoked job run again.
    pub async fn activate(&self, job_id: &str) -> Result<(), BackendError> {
        self.job(job_id).await?;
        self.bucket(BUCKET_SCRIPT_STATUS)
            .await?
            .put(job_id, Bytes::from_static(SCRIPT_STATUS_ACTIVE.as_bytes()))
            .await?;
        Ok(())
    }

    /// Pins the version agents may run (others are skipped with 124).
    pub async fn pin(&self, job_id: &str, version: &str) -> Result<(), BackendError> {
        self.job(job_id).await?;
        self.bucket(BUCKET_SCRIPT_CURRENT)
            .await?
            .put(job_id, Bytes::from(version.to_owned()))
            .await?;
        Ok(())
    }

    /// Kills an execution's running processes on every agent.
    pub async fn kill(&self, exec_id: &str) -> Result<(), BackendError> {
        let token = SubjectToken::new(TokenKind::ExecId, exec_id.to_owned())
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
        let db = self.db.clone();
        let id = exec_id.to_owned();
        if self.run_db(move || db.execution(&id)).await?.is_none() {
            return Err(BackendError::NotFound(format!("execution {exec_id}")));
        }
        self.log
            .publish(&subjects::kill(&token), Headers::new(), Bytes::new())
            .await?;
        let db = self.db.clone();
        let id = exec_id.to_owned();
        self.run_db(move || db.set_status(&id, "cancelled")).await?;
        Ok(())
    }

    /// Runs the projectors until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BackendError> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(project_results(self.clone()));
        tasks.spawn(project_started(self.clone()));
        tasks.spawn(project_heartbeats(self.clone()));
        tasks.spawn(reaper(self.clone()));
        shutdown.await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(())
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
            let mut bytes = Vec::new();
            store
                .get(&key)
                .await?
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| TransportError::Backend(Box::new(e)))?;
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
    let mut config = ConsumerConfig::new("backend_results", DeliverPolicy::All);
    config.ack_wait = Duration::from_secs(60);
    let consumer = loop {
        match backend
            .log
            .create_consumer(STREAM_RESULTS, config.clone())
            .await
        {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!("results projector: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let delivery = match consumer.next().await {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::warn!("results projector: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut result: ExecResult = match serde_json::from_slice(&delivery.message.payload) {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(
                    subject = delivery.message.subject,
                    "malformed result dropped: {e}"
                );
                let _ = delivery.ack().await;
                continue;
            }
        };
        if let Err(e) = backend.dereference(&mut result).await {
            if delivery.delivered < MAX_OVERFLOW_TRIES {
                tracing::warn!(
                    result_id = result.result_id,
                    "overflow not readable yet: {e}"
                );
                let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                continue;
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
        let db = backend.db.clone();
        match backend
            .run_db(move || db.store_result(&result, false))
            .await
        {
            // Ack only after the row is committed.
            Ok(_) => {
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::error!("result not stored: {e}");
                let _ = delivery.nak(Some(Duration::from_secs(5))).await;
            }
        }
    }
}

async fn project_started(backend: Backend) {
    let mut config = ConsumerConfig::new("backend_started", DeliverPolicy::All);
    config.filter_subjects = vec!["events.started.>".into()];
    let consumer = loop {
        match backend
            .log
            .create_consumer(STREAM_EVENTS, config.clone())
            .await
        {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!("start projector: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let Ok(delivery) = consumer.next().await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if let Ok(event) = serde_json::from_slice::<EventStarted>(&delivery.message.payload) {
            let db = backend.db.clone();
            let reap_after = match &event.exec_id {
                Some(exec_id) => {
                    let db = db.clone();
                    let id = exec_id.clone();
                    backend
                        .run_db(move || db.execution(&id))
                        .await
                        .ok()
                        .flatten()
                        .map(|e| e.reap_after_secs)
                }
                None => None,
            }
            .unwrap_or(3600);
            let deadline = event.started_at + chrono::Duration::seconds(reap_after);
            let run = OverdueRun {
                result_id: event.result_id.clone(),
                exec_id: event.exec_id.clone(),
                request_id: event.request_id.clone(),
                pc_id: event.pc_id.clone(),
                started_at: event.started_at.to_rfc3339(),
            };
            if let Err(e) = backend.run_db(move || db.insert_run(&run, deadline)).await {
                tracing::warn!("start event not stored: {e}");
                let _ = delivery.nak(Some(Duration::from_secs(5))).await;
                continue;
            }
        }
        let _ = delivery.ack().await;
    }
}

/// Aborts a helper task when its owner ends (or is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most heartbeats stored in one transaction.
const HEARTBEAT_BATCH: usize = 1000;

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
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let _reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(message) = heartbeats.next().await {
            if queue.send(message).is_err() {
                break;
            }
        }
    }));
    while let Some(message) = queued.recv().await {
        // Whatever else has already arrived goes into the same transaction.
        let mut batch = Vec::new();
        let mut next = Some(message);
        while let Some(message) = next.take() {
            if let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
                batch.push(heartbeat);
            }
            if batch.len() < HEARTBEAT_BATCH {
                next = queued.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let db = backend.db.clone();
        if let Err(e) = backend.run_db(move || db.upsert_agents(&batch)).await {
            tracing::warn!("heartbeats not stored: {e}");
        }
    }
}

async fn reaper(backend: Backend) {
    loop {
        tokio::time::sleep(backend.settings.reap_interval).await;
        let db = backend.db.clone();
        let now = backend.now();
        let overdue = match backend.run_db(move || db.overdue_runs(now)).await {
            Ok(overdue) => overdue,
            Err(e) => {
                tracing::warn!("reaper: {e}");
                continue;
            }
        };
        for run in overdue {
            let now = backend.now();
            let result = ExecResult {
                result_id: run.result_id,
                request_id: run.request_id,
                exec_id: run.exec_id,
                pc_id: run.pc_id,
                exit_code: -1,
                skipped: false,
                stdout: String::new(),
                stderr: "kanade: reaped by the backend: the agent started this run but never reported a result".into(),
                started_at: chrono::DateTime::parse_from_rfc3339(&run.started_at).map_or(now, |t| t.with_timezone(&Utc)),
                finished_at: now,
                stdout_object: None,
                stderr_object: None,
                manifest_id: None,
                attempts: 1,
            };
            let db = backend.db.clone();
            if let Err(e) = backend.run_db(move || db.store_result(&result, true)).await {
                tracing::warn!("reaper: {e}");
            }
        }
    }
}
