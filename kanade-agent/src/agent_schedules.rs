//! Agent-side schedules (`runs_on: agent`): the agent keeps a verified
//! copy of the schedules that target it (bucket `agent_schedules`, see
//! `kanade_core::wire::AgentSchedule`) and fires them on its own clock —
//! while the broker is unreachable and across restarts.
//!
//! State, through the agent's [`StateFiles`](crate::state_files::StateFiles)
//! in its state directory: `agent-schedules.json` (the signed documents as
//! received, re-verified when loaded) and `agent-fires.json` (per schedule,
//! its [`FireRecord`]: written before a fire starts, so a crash never fires
//! twice; the fire's request id is also fixed by the schedule and the
//! occurrence, so the ledger refuses a second one anyway).
//!
//! What is due is decided by `kanade_core::policy::firing::agent_fire`,
//! built on the same functions the backend's scheduler uses. A fire is a
//! command like any other from then on: ledger, gates (revoke 126, start
//! deadline 125 — with `starting_deadline` set, a fire missed while the
//! host was off is skipped with 125 rather than run late —, staleness),
//! outbox; its execution id is `sched-<schedule>-<occurrence, unix
//! seconds>` (`-once`, `-v<digest of the version>` for the once forms),
//! which the backend groups results by. The script of an accepted
//! schedule is fetched into the script cache at once, so a fire while the
//! broker is away finds it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade_core::names::BUCKET_AGENT_SCHEDULES;
use kanade_core::policy::firing::{agent_fire, agent_next_due, FireRecord, ScheduleGates};
use kanade_core::policy::signed::SignedDocument;
use kanade_core::policy::when::{lower, Plan};
use kanade_core::transport::{KvConfig, KvOperation};
use kanade_core::wire::{AgentSchedule, FleetFreeze, AGENT_FIRE_PREFIX, FREEZE_KEY};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::state::Inner;

/// How often schedules are looked at when nothing is due sooner (windows,
/// active dates and the freeze are judged at these looks).
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// The documents as received: schedule id → document, and the freeze.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Snapshot {
    #[serde(default)]
    schedules: BTreeMap<String, SignedDocument>,
    #[serde(default)]
    freeze: Option<SignedDocument>,
}

fn snapshot_path(inner: &Inner) -> PathBuf {
    inner.settings.state_dir.join("agent-schedules.json")
}

fn fires_path(inner: &Inner) -> PathBuf {
    inner.settings.state_dir.join("agent-fires.json")
}

/// The file's value: the default when there is none yet, `None` when it
/// exists but cannot be read or decoded (never mistaken for a fresh one).
fn load<T: for<'de> Deserialize<'de> + Default>(
    inner: &Inner,
    path: &std::path::Path,
) -> Option<T> {
    match inner.files.read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(path = %path.display(), "agent-side schedule state unreadable: {e}");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(T::default()),
        Err(e) => {
            tracing::error!(path = %path.display(), "agent-side schedule state unreadable: {e}");
            None
        }
    }
}

/// Writes the file; false (logged) if it could not be written.
fn save<T: Serialize>(inner: &Inner, path: &std::path::Path, value: &T, durable: bool) -> bool {
    let written = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|bytes| inner.files.write(path, &bytes, durable));
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(path = %path.display(), "agent-side schedule state not written: {e}");
            false
        }
    }
}

/// The document's body if this agent accepts it: verified against the
/// key ring when the host enforces signatures, or when the ring has keys
/// and the document is signed (a bad signature is never accepted).
fn accepted_body<'a>(inner: &Inner, key: &str, doc: &'a SignedDocument) -> Option<&'a str> {
    let ring = inner.trust.ring();
    let must_verify = inner.trust.enforcing() || (!ring.is_empty() && doc.is_signed());
    if must_verify {
        if let Err(refusal) = doc.verify(&ring) {
            tracing::warn!(key, "agent-side schedule refused: {refusal}");
            return None;
        }
    }
    Some(&doc.body)
}

/// A schedule this agent runs, lowered.
struct Accepted {
    schedule: AgentSchedule,
    plan: Plan,
}

/// The accepted schedules that target this agent, and whether the fleet
/// is frozen at `now`.
fn accepted(inner: &Inner, snapshot: &Snapshot, now: DateTime<Utc>) -> (Vec<Accepted>, bool) {
    let (pc, groups) = {
        let live = inner.live();
        (
            inner.settings.pc_id.to_string(),
            live.groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for (key, doc) in &snapshot.schedules {
        let Some(body) = accepted_body(inner, key, doc) else {
            continue;
        };
        let Ok(schedule) = serde_json::from_str::<AgentSchedule>(body) else {
            tracing::warn!(key, "agent-side schedule unreadable; ignored");
            continue;
        };
        if schedule.schedule_id != *key || !schedule.target.includes(&pc, &groups) {
            continue;
        }
        match lower(&schedule.when) {
            Ok(plan) => out.push(Accepted { schedule, plan }),
            Err(e) => tracing::warn!(key, "agent-side schedule's when: {e}"),
        }
    }
    // A freeze document that is there but cannot be trusted or read holds
    // fires (fails closed); none at all means no freeze was ever set.
    let frozen = snapshot.freeze.as_ref().is_some_and(|doc| {
        accepted_body(inner, FREEZE_KEY, doc)
            .and_then(|body| serde_json::from_str::<FleetFreeze>(body).ok())
            .is_none_or(|freeze| freeze.holds(now))
    });
    (out, frozen)
}

fn gates(schedule: &AgentSchedule) -> ScheduleGates<'_> {
    ScheduleGates {
        enabled: schedule.enabled,
        active_from: schedule.active_from.as_deref(),
        active_until: schedule.active_until.as_deref(),
        skip_dates: &schedule.skip_dates,
        window: schedule.window.as_deref(),
        local: schedule.tz.as_deref() == Some("local"),
    }
}

/// This boot's id: the settings' (tests), else Linux's
/// `/proc/sys/kernel/random/boot_id`, else this process's start.
fn boot_id(inner: &Inner) -> String {
    if let Some(id) = &inner.settings.boot_id {
        return id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| format!("process-{}", inner.started_at.timestamp_millis()))
}

/// What names a fire of `plan` at `occurrence` in its execution id: the
/// occurrence's unix seconds, or — for the once forms, whose one fire must
/// keep one request id whenever it happens — `once` / `v<digest of the
/// version>`.
fn occurrence_key(plan: &Plan, occurrence: DateTime<Utc>, version: &str) -> String {
    use kanade_core::policy::when::Repeat;
    match plan {
        Plan::PerPc(Repeat::Once) | Plan::PerTarget(Repeat::Once) => "once".to_owned(),
        Plan::PerPc(Repeat::OncePerVersion) => {
            let digest = kanade_core::policy::script::sha256_hex(version.as_bytes());
            format!("v{}", &digest[..12])
        }
        _ => occurrence.timestamp().to_string(),
    }
}

/// The command of `schedule`'s fire at `occurrence` on this agent. A
/// startup fire's request id also names the boot (`boot`), so a host whose
/// clock starts at the same second every boot still fires once per boot.
fn fire_command(
    schedule: &AgentSchedule,
    plan: &Plan,
    occurrence: DateTime<Utc>,
    boot: Option<&str>,
) -> Vec<u8> {
    let exec_id = format!(
        "{AGENT_FIRE_PREFIX}{}-{}",
        schedule.schedule_id,
        occurrence_key(plan, occurrence, &schedule.command.version)
    );
    let mut command = schedule.command.clone();
    // Per agent, one request per occurrence (the result id adds the pc).
    command.request_id = exec_id.clone();
    if let Some(boot) = boot {
        let digest = kanade_core::policy::script::sha256_hex(boot.as_bytes());
        command
            .request_id
            .push_str(&format!("-boot-{}", &digest[..12]));
    }
    command.exec_id = Some(exec_id);
    command.issued_at = Some(occurrence);
    command.deadline_at = schedule
        .starting_deadline_secs
        .and_then(|secs| i64::try_from(secs).ok())
        .map(|secs| occurrence + chrono::Duration::seconds(secs));
    serde_json::to_vec(&command).unwrap_or_default()
}

/// Drops from the snapshot what the bucket no longer has — deleted while
/// this agent was away, which the watch (starting from the current values)
/// never reports. Returns whether anything was dropped; nothing when the
/// bucket cannot be listed (offline: the snapshot stands).
async fn prune_deleted(inner: &Arc<Inner>, snapshot: &Mutex<Snapshot>) -> bool {
    let Ok(kv) = inner
        .transport
        .key_value(KvConfig::new(BUCKET_AGENT_SCHEDULES))
        .await
    else {
        return false;
    };
    let Ok(keys) = kv.keys().await else {
        return false;
    };
    let copy = {
        let mut snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let before = snap.schedules.len() + usize::from(snap.freeze.is_some());
        snap.schedules.retain(|key, _| keys.contains(key));
        if !keys.iter().any(|k| k == FREEZE_KEY) {
            snap.freeze = None;
        }
        let after = snap.schedules.len() + usize::from(snap.freeze.is_some());
        (before != after).then(|| snap.clone())
    };
    match copy {
        Some(copy) => {
            save(inner, &snapshot_path(inner), &copy, true);
            true
        }
        None => false,
    }
}

/// How long a starting agent waits to learn which schedules were deleted
/// while it was away before it fires from its snapshot.
const PRUNE_AT_START: Duration = Duration::from_secs(2);

/// Follows the `agent_schedules` bucket into the snapshot (persisted on
/// every change), waking the firing loop.
async fn follow(inner: Arc<Inner>, snapshot: Arc<Mutex<Snapshot>>, changed: Arc<Notify>) {
    loop {
        let watch = match inner
            .transport
            .key_value(KvConfig::new(BUCKET_AGENT_SCHEDULES))
            .await
        {
            Ok(kv) => kv.watch(">").await,
            Err(e) => Err(e),
        };
        if prune_deleted(&inner, &snapshot).await {
            changed.notify_one();
        }
        match watch {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let doc = (entry.operation == KvOperation::Put)
                        .then(|| serde_json::from_slice::<SignedDocument>(&entry.value).ok())
                        .flatten();
                    let copy = {
                        let mut snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
                        if entry.key == FREEZE_KEY {
                            snap.freeze = doc;
                        } else {
                            match doc {
                                Some(doc) => snap.schedules.insert(entry.key.clone(), doc),
                                None => snap.schedules.remove(&entry.key),
                            };
                        }
                        snap.clone()
                    };
                    save(&inner, &snapshot_path(&inner), &copy, true);
                    changed.notify_one();
                }
            }
            Err(e) => tracing::debug!("agent_schedules not watched yet: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Fires agent-side schedules as they come due, from the snapshot on disk
/// while the broker is away.
pub(crate) async fn schedule_loop(inner: Arc<Inner>) {
    let snapshot = Arc::new(Mutex::new(
        load::<Snapshot>(&inner, &snapshot_path(&inner)).unwrap_or_default(),
    ));
    let changed = Arc::new(Notify::new());
    let _ = tokio::time::timeout(PRUNE_AT_START, prune_deleted(&inner, &snapshot)).await;
    // Dropped (the agent stopping) with this task: the follower ends too.
    let mut follower = tokio::task::JoinSet::new();
    follower.spawn(follow(inner.clone(), snapshot.clone(), changed.clone()));
    let boot = boot_id(&inner);
    // An unreadable fire record could make a once-form fire again: fire
    // nothing until it is repaired (or removed, to start afresh).
    let Some(mut records) = load::<BTreeMap<String, FireRecord>>(&inner, &fires_path(&inner))
    else {
        tracing::error!(
            path = %fires_path(&inner).display(),
            "agent-side schedules do not fire: their fire record is unreadable (remove it to start afresh)"
        );
        return;
    };
    let mut prefetched = std::collections::HashSet::new();
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let regrouped = inner.groups_changed.notified();
        tokio::pin!(regrouped);
        regrouped.as_mut().enable();
        let now = inner.clock.now();
        let copy = snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (schedules, frozen) = accepted(&inner, &copy, now);
        let before = records.clone();
        // Scripts into the cache while the broker is here (a fire offline
        // then finds them), once per script digest and agent run, beside
        // the firing (a fetch retries with backoff).
        for Accepted { schedule, .. } in &schedules {
            let digest = schedule.command.script_object_sha256.clone();
            if schedule.command.script_object.is_some() && prefetched.insert(digest) {
                let (inner, command) = (inner.clone(), schedule.command.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::script::resolve_script(&inner, &command).await {
                        tracing::warn!(
                            job = command.id,
                            "agent-side schedule's script not cached: {e}"
                        );
                    }
                });
            }
        }
        let mut fires = Vec::new();
        let mut wake: Option<DateTime<Utc>> = None;
        for Accepted { schedule, plan } in &schedules {
            let record = records
                .get(&schedule.schedule_id)
                .cloned()
                .unwrap_or_default();
            let (fire, next) = agent_fire(
                plan,
                &gates(schedule),
                &schedule.command.version,
                &record,
                now,
                &boot,
                frozen,
            );
            // A due time not after now (a repeat held by a gate) waits for
            // the next look instead of spinning.
            if let Some(due) =
                agent_next_due(plan, &next, now, gates(schedule).local).filter(|due| *due > now)
            {
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
            if let Some(occurrence) = fire {
                let boot = matches!(plan, Plan::AgentSide).then_some(boot.as_str());
                fires.push((
                    schedule.schedule_id.clone(),
                    fire_command(schedule, plan, occurrence, boot),
                ));
                tracing::info!(
                    schedule = schedule.schedule_id,
                    %occurrence,
                    "agent-side schedule fired"
                );
            }
            records.insert(schedule.schedule_id.clone(), next);
        }
        // Recorded before anything starts, durably when something fires: a
        // crash never fires twice. (A cursor that only moved is written
        // without a sync: lost, it only makes the next look start earlier.)
        if records != before
            && !save(&inner, &fires_path(&inner), &records, !fires.is_empty())
            && !fires.is_empty()
        {
            // Not recorded, not fired: a crash could not tell.
            records = before;
            fires.clear();
        }
        for (schedule_id, payload) in fires {
            crate::fire::admit_local_and_spawn(inner.clone(), &schedule_id, payload.into()).await;
        }
        let sleep = if schedules.is_empty() {
            None
        } else {
            let until = wake.map_or(LOOK_EVERY, |w| {
                (w - inner.clock.now()).to_std().unwrap_or_default()
            });
            Some(until.min(LOOK_EVERY).max(Duration::from_millis(200)))
        };
        let pause = sleep.map_or(Duration::MAX, |p| p);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = notified.as_mut() => {}
            () = regrouped.as_mut() => {}
        }
    }
}
