//! `runs_on: agent` schedules handed to agents: the `agent_schedules`
//! bucket holds, per such schedule, a signed
//! [`AgentSchedule`](kanade_core::wire::AgentSchedule) — the schedule's
//! timing and gates with the command each fire runs (the job's current
//! version) — and, under [`FREEZE_KEY`], the fleet-wide freeze. Agents
//! keep a verified copy on disk and fire from it while offline. The
//! bucket is rewritten from the stored schedules whenever a schedule, a
//! job, an approval or the freeze changes.

use std::collections::BTreeMap;

use kanade_core::names::BUCKET_AGENT_SCHEDULES;
use kanade_core::policy::signed::SignedDocument;
use kanade_core::wire::{AgentSchedule, AgentTarget, FleetFreeze, FREEZE_KEY};

use super::core::Backend;
use super::error::BackendError;
use crate::manifest::Schedule;

impl Backend {
    /// Rewrites the `agent_schedules` bucket from the stored schedules:
    /// every enabled or disabled `runs_on: agent` schedule whose job exists
    /// (and, for a job that requires approval, whose current version is
    /// approved for it) is there, signed with the backend's signing key
    /// (unsigned without one); others are removed. A record whose content
    /// did not change is left as it is. Returns how many are published.
    ///
    /// # Errors
    /// A transport or database error (the bucket is then partly updated;
    /// the next change rewrites it).
    pub async fn publish_agent_schedules(&self) -> Result<usize, BackendError> {
        let mut wanted = BTreeMap::new();
        for schedule in self.schedules().await? {
            if schedule.runs_on.as_deref() != Some("agent") {
                continue;
            }
            let Some(record) = self.agent_schedule(&schedule).await? else {
                continue;
            };
            let body = serde_json::to_string(&record).map_err(BackendError::Encode)?;
            wanted.insert(schedule.id.clone(), body);
        }
        let bucket = self.bucket(BUCKET_AGENT_SCHEDULES).await?;
        for key in bucket.keys().await? {
            if key != FREEZE_KEY && !wanted.contains_key(&key) {
                bucket.delete(&key).await?;
            }
        }
        let count = wanted.len();
        for (id, body) in wanted {
            let unchanged = bucket
                .get(&id)
                .await?
                .and_then(|entry| serde_json::from_slice::<SignedDocument>(&entry.value).ok())
                .is_some_and(|doc| doc.body == body);
            if !unchanged {
                self.put_signed(&bucket, &id, body).await?;
            }
        }
        Ok(count)
    }

    /// Publishes the fleet-wide freeze for agent-side schedules.
    ///
    /// # Errors
    /// A transport or database error.
    pub async fn publish_freeze(&self) -> Result<(), BackendError> {
        let db = self.db.clone();
        let freeze = self.run_db(move || db.freeze()).await?;
        let record = FleetFreeze {
            frozen: freeze.is_some(),
            until: freeze
                .and_then(|f| f.until)
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(&u).ok())
                .map(|u| u.with_timezone(&chrono::Utc)),
        };
        let body = serde_json::to_string(&record).map_err(BackendError::Encode)?;
        let bucket = self.bucket(BUCKET_AGENT_SCHEDULES).await?;
        self.put_signed(&bucket, FREEZE_KEY, body).await
    }

    async fn put_signed(
        &self,
        bucket: &std::sync::Arc<dyn kanade_core::transport::KeyValue>,
        key: &str,
        body: String,
    ) -> Result<(), BackendError> {
        let doc = SignedDocument::new(
            body,
            self.settings.signer.as_deref(),
            self.now().timestamp_millis(),
        );
        let text = serde_json::to_vec(&doc).map_err(BackendError::Encode)?;
        bucket.put(key, text.into()).await?;
        Ok(())
    }

    /// The record agents get for `schedule`, or `None` when its job is
    /// gone or awaits approval.
    async fn agent_schedule(
        &self,
        schedule: &Schedule,
    ) -> Result<Option<AgentSchedule>, BackendError> {
        let job = match self.job(&schedule.job_id).await {
            Ok(job) => job,
            Err(BackendError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if job.require_approval.required() {
            let db = self.db.clone();
            let (id, version) = (schedule.id.clone(), job.version.clone());
            if !self
                .run_db(move || db.schedule_approved(&id, &version))
                .await?
            {
                return Ok(None);
            }
        }
        // Per fire the agent sets the ids, the issue time and the deadline.
        let options = crate::schedule::fire_options(schedule, self.now());
        let (mut command, _) = self.command_for(&job, "", &options).await?;
        command.request_id = String::new();
        command.exec_id = None;
        command.deadline_at = None;
        let constraints = schedule.constraints.as_ref();
        Ok(Some(AgentSchedule {
            schedule_id: schedule.id.clone(),
            when: schedule.when.clone(),
            target: AgentTarget {
                all: schedule.target.all,
                groups: schedule.target.groups.clone(),
                pcs: schedule.target.pcs.clone(),
            },
            tz: schedule.tz.clone(),
            enabled: schedule.enabled,
            active_from: schedule.active.as_ref().and_then(|a| a.from.clone()),
            active_until: schedule.active.as_ref().and_then(|a| a.until.clone()),
            window: constraints.and_then(|c| c.window.clone()),
            skip_dates: constraints
                .map(|c| c.skip_dates.clone())
                .unwrap_or_default(),
            starting_deadline_secs: schedule
                .starting_deadline
                .as_deref()
                .and_then(|d| humantime::parse_duration(d).ok())
                .map(|d| d.as_secs()),
            command,
        }))
    }
}
