//! The scheduler: each tick, decides (with the pure functions of
//! [`crate::schedule`]) which stored schedules fire, and fires them through
//! [`Backend::fire`]. Fires are recorded in SQLite before the command goes
//! out (with the execution id it will use), so a restart neither fires
//! twice nor forgets a fire; the stored schedules are re-read every tick,
//! so edits take effect without a restart. `runs_on: agent` schedules are
//! left to the agents.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::manifest::{Schedule, Target};
use crate::schedule::{calendar_due, is_local, lower, repeat_due, schedule_blocked, Plan};
use crate::{Backend, BackendError, FireOptions};

pub use crate::backend::NowFn;

/// Fires stored schedules.
#[derive(Clone)]
pub struct Scheduler {
    backend: Backend,
    now: NowFn,
    tick: Duration,
}

/// Scope key of a per-target fire record.
const TARGET_SCOPE: &str = "*";

/// How long a fire without a result counts as in flight (the dispatch
/// record's bounded window).
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Scheduler {
    /// A scheduler on the backend's clock, ticking every second.
    pub fn new(backend: Backend) -> Self {
        let now = backend.clock();
        Self::with_clock(backend, now, Duration::from_secs(1))
    }

    /// A scheduler reading time from `now` and ticking every `tick`.
    pub fn with_clock(backend: Backend, now: NowFn, tick: Duration) -> Self {
        Self { backend, now, tick }
    }

    /// Runs ticks until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let ticking = async {
            loop {
                if let Err(e) = self.tick_once().await {
                    tracing::warn!("scheduler tick: {e}");
                }
                tokio::time::sleep(self.tick).await;
            }
        };
        tokio::select! {
            biased;
            _ = ticking => {}
            _ = shutdown => {}
        }
    }

    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&crate::db::Db) -> Result<T, crate::db::DbError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let db = self.backend.db().clone();
        self.backend.run_db(move || work(&db)).await
    }

    /// One pass over every schedule; returns the executions it started.
    pub async fn tick_once(&self) -> Result<Vec<String>, BackendError> {
        let now = (self.now)();
        let frozen = self.db(move |db| db.frozen(now)).await?;
        let mut fired = self.fire_due_waves(now, frozen).await?;
        for schedule in self.backend.schedules().await? {
            match self.consider(&schedule, now, frozen).await {
                Ok(Some(exec_id)) => fired.push(exec_id),
                Ok(None) => {}
                Err(e) => tracing::warn!(schedule = schedule.id, "not fired: {e}"),
            }
        }
        Ok(fired)
    }

    fn options(&self, schedule: &Schedule, due_at: DateTime<Utc>) -> FireOptions {
        FireOptions {
            exec_id: Some(self.backend.new_id()),
            ..crate::schedule::fire_options(schedule, due_at)
        }
    }

    /// Fires the later waves whose delay has passed. A wave's execution id
    /// is fixed when it is planned, so a restart neither repeats nor drops it.
    ///
    /// A fleet-wide freeze or a disabled schedule holds its due waves (the
    /// rule of `schedule_blocked` for fires holds for waves too): they stay
    /// planned and go out, late, once the freeze is lifted or the schedule
    /// enabled again — the rollout's first waves already ran, so it is
    /// finished rather than left half-done; a wave's `starting_deadline`
    /// still counts from its planned time, so a wave held too long is
    /// skipped by the agents with 125.
    async fn fire_due_waves(
        &self,
        now: DateTime<Utc>,
        frozen: bool,
    ) -> Result<Vec<String>, BackendError> {
        let mut fired = Vec::new();
        for wave in self.db(move |db| db.due_waves(now)).await? {
            let schedule = match self.backend.schedule(&wave.schedule_id).await {
                Ok(schedule) => schedule,
                Err(e) => {
                    tracing::warn!(schedule = wave.schedule_id, "wave dropped: {e}");
                    let done = wave.clone();
                    self.db(move |db| db.wave_fired(&done)).await?;
                    continue;
                }
            };
            if frozen || !schedule.enabled {
                tracing::debug!(
                    schedule = schedule.id,
                    wave = wave.wave,
                    frozen,
                    enabled = schedule.enabled,
                    "wave held"
                );
                continue;
            }
            let mut options = self.options(&schedule, wave.deadline_base);
            options.exec_id = Some(wave.exec_id.clone());
            let already = {
                let id = wave.exec_id.clone();
                self.db(move |db| db.execution(&id)).await?.is_some()
            };
            if !already {
                let target = Target {
                    groups: vec![wave.group.clone()],
                    ..Target::default()
                };
                self.backend
                    .fire(&schedule.job_id, &target, options)
                    .await?;
                self.backend.metrics().scheduler_fires.inc();
                tracing::info!(
                    schedule = schedule.id,
                    wave = wave.wave,
                    group = wave.group,
                    "wave fired"
                );
                fired.push(wave.exec_id.clone());
            }
            let done = wave.clone();
            self.db(move |db| db.wave_fired(&done)).await?;
        }
        Ok(fired)
    }

    /// Fires a calendar or per-target schedule: to its target, or as
    /// rollout waves (the first now, the rest planned after their delays).
    async fn fire_target(
        &self,
        schedule: &Schedule,
        scope: String,
        version: &str,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<String, BackendError> {
        let Some(rollout) = schedule
            .rollout
            .as_ref()
            .filter(|r| r.is_timed_waves() && !r.waves.is_empty())
        else {
            return self
                .fire(
                    schedule,
                    &schedule.target,
                    vec![scope],
                    version,
                    due_at,
                    now,
                )
                .await;
        };
        let first = Target {
            groups: vec![rollout.waves[0].group.clone().unwrap_or_default()],
            ..Target::default()
        };
        // Plan the later waves under the first wave's execution id before
        // anything goes out.
        let options = self.options(schedule, due_at);
        let fire_key = options.exec_id.clone().unwrap_or_default();
        for (index, wave) in rollout.waves.iter().enumerate().skip(1) {
            let delay = wave
                .delay
                .as_deref()
                .and_then(|d| humantime::parse_duration(d).ok())
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .unwrap_or_default();
            let planned = crate::db::PlannedWave {
                schedule_id: schedule.id.clone(),
                fire_key: fire_key.clone(),
                wave: index as i64,
                group: wave.group.clone().unwrap_or_default(),
                due_at: due_at + delay,
                deadline_base: due_at + delay,
                exec_id: self.backend.new_id(),
            };
            self.db(move |db| db.plan_wave(&planned)).await?;
        }
        let (id, version_owned, exec) = (schedule.id.clone(), version.to_owned(), fire_key.clone());
        self.db(move |db| db.record_fire(&id, &scope, &version_owned, now, &exec))
            .await?;
        self.backend.fire(&schedule.job_id, &first, options).await?;
        self.backend.metrics().scheduler_fires.inc();
        Ok(fire_key)
    }

    /// Records the fire for every scope, then fires.
    async fn fire(
        &self,
        schedule: &Schedule,
        target: &Target,
        scopes: Vec<String>,
        version: &str,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<String, BackendError> {
        let options = self.options(schedule, due_at);
        let exec_id = options.exec_id.clone().unwrap_or_default();
        for scope in scopes {
            let (id, version, exec) = (schedule.id.clone(), version.to_owned(), exec_id.clone());
            self.db(move |db| db.record_fire(&id, &scope, &version, now, &exec))
                .await?;
        }
        self.backend.fire(&schedule.job_id, target, options).await?;
        self.backend.metrics().scheduler_fires.inc();
        tracing::info!(schedule = schedule.id, exec_id, "fired");
        Ok(exec_id)
    }

    async fn consider(
        &self,
        schedule: &Schedule,
        now: DateTime<Utc>,
        frozen: bool,
    ) -> Result<Option<String>, BackendError> {
        if schedule.runs_on.as_deref() == Some("agent") {
            return Ok(None);
        }
        let plan = lower(&schedule.when)?;
        let blocked = schedule_blocked(schedule, now, frozen);
        let job = self.backend.job(&schedule.job_id).await?;
        let version = job.version;
        if job.require_approval.required() {
            let (id, v) = (schedule.id.clone(), version.clone());
            if !self.db(move |db| db.schedule_approved(&id, &v)).await? {
                tracing::debug!(
                    schedule = schedule.id,
                    version,
                    "awaiting approval: not fired"
                );
                return Ok(None);
            }
        }
        let id = schedule.id.clone();
        match &plan {
            Plan::AgentSide => Ok(None),
            Plan::Calendar { .. } => {
                let cursor = self
                    .db({
                        let id = id.clone();
                        move |db| db.cursor(&id)
                    })
                    .await?;
                self.db({
                    let id = id.clone();
                    move |db| db.set_cursor(&id, now)
                })
                .await?;
                // First sight: start counting from now, never fire the past.
                let Some(since) = cursor else { return Ok(None) };
                let Some(due_at) = calendar_due(&plan, since, now, is_local(schedule)) else {
                    return Ok(None);
                };
                if let Some(why) = blocked {
                    tracing::info!(schedule = id, "occurrence {due_at} skipped: {why}");
                    return Ok(None);
                }
                self.fire_target(
                    schedule,
                    format!("at:{}", due_at.to_rfc3339()),
                    &version,
                    due_at,
                    now,
                )
                .await
                .map(Some)
            }
            Plan::PerTarget(repeat) => {
                if blocked.is_some() {
                    return Ok(None);
                }
                let last = self.db(move |db| db.last_fire(&id, TARGET_SCOPE)).await?;
                if !repeat_due(
                    repeat,
                    last.as_ref().map(|(at, v)| (*at, v.as_str())),
                    &version,
                    now,
                ) {
                    return Ok(None);
                }
                self.fire_target(schedule, TARGET_SCOPE.to_owned(), &version, now, now)
                    .await
                    .map(Some)
            }
            Plan::PerPc(repeat) => {
                if blocked.is_some() {
                    return Ok(None);
                }
                let window_start =
                    now - chrono::Duration::from_std(IN_FLIGHT_WINDOW).unwrap_or_default();
                let in_flight = self
                    .db({
                        let id = id.clone();
                        move |db| db.in_flight_pcs(&id, window_start)
                    })
                    .await?;
                let mut due = Vec::new();
                for pc in self.backend.target_pcs(&schedule.target).await? {
                    if in_flight.contains(&pc) {
                        continue; // its previous fire there is still running
                    }
                    let (id, scope) = (id.clone(), pc.clone());
                    let last = self.db(move |db| db.last_fire(&id, &scope)).await?;
                    if repeat_due(
                        repeat,
                        last.as_ref().map(|(at, v)| (*at, v.as_str())),
                        &version,
                        now,
                    ) {
                        due.push(pc);
                    }
                }
                if let Some(max) = schedule.constraints.as_ref().and_then(|c| c.max_concurrent) {
                    let room = (max as usize).saturating_sub(in_flight.len());
                    due.truncate(room);
                }
                if due.is_empty() {
                    return Ok(None);
                }
                let target = Target {
                    pcs: due.clone(),
                    ..Target::default()
                };
                self.fire(schedule, &target, due, &version, now, now)
                    .await
                    .map(Some)
            }
        }
    }
}
