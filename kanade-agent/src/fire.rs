//! The fire path: admission → gates → jitter → slot → gates again →
//! script → start event → attempts with retry → one result. This module
//! runs an admitted command; admission, script resolution and reporting
//! live in their own modules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_core::names::SubjectToken;
use kanade_core::policy::exit_codes;
use kanade_core::policy::retry::{next_attempt, AttemptOutcome, RetryDecision};
use kanade_core::policy::{evaluate_gates, Delivery, GateDecision, GateInputs};
use kanade_core::transport::Headers;
use kanade_core::wire::Command;
use tokio::sync::watch;

use crate::admission::admit;
use crate::kills::Arrival;
use crate::ledger::Stage;
use crate::report::{emit_events, finish, publish_started, stopped, Outcome};
use crate::runner::{unless_killed, RunEnd, RunSpec};
use crate::script::resolve_script;
use crate::state::{InFlight, Inner};
use crate::trust::Verdict;
use crate::SCRIPT_FAILURE_EXIT;

/// Runs an admitted command in the background, counted as in flight.
pub(crate) fn spawn_execute(
    inner: Arc<Inner>,
    command: Command,
    request: SubjectToken,
    arrival: Arrival,
) {
    let mut executions = inner.executions.lock().unwrap_or_else(|p| p.into_inner());
    // A message handler still in flight when the agent stopped (or halted)
    // must not start work behind its back: the ledger keeps the command
    // pending and the next start resumes it. Checked under the lock that
    // halting takes, so no spawn slips in after the abort.
    if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let guard = InFlight::enter(&inner);
    inner.metrics.commands.inc();
    while executions.try_join_next().is_some() {}
    let task_inner = inner.clone();
    executions.spawn(async move {
        execute(task_inner, command, request, arrival).await;
        drop(guard);
    });
}

/// Checks the command's signature against the host's trust (before any
/// gate, and before its request id is admitted), then admits it (at most
/// once per request id) and runs it in the background.
pub(crate) async fn admit_and_spawn(
    inner: Arc<Inner>,
    headers: &Headers,
    payload: Bytes,
    arrival: Arrival,
) {
    let received_at = inner.clock.now();
    let now_ms = received_at.timestamp_millis();
    match inner.trust.check(headers, &payload, now_ms) {
        Verdict::Run { report } => {
            if let Some(kind) = report {
                crate::report::publish_signature_event(&inner, kind).await;
            }
        }
        Verdict::Refuse(refusal) => {
            crate::admission::refuse_unverified(&inner, &payload, &refusal).await;
            return;
        }
    }
    // A live command was published moments ago: its issued_at (the
    // backend's clock) against our clock is our offset — sampled even when
    // the replay delivered the same command first. A replayed one may be
    // days old and says nothing about the clock.
    if arrival == Arrival::Live {
        if let Some(issued_at) = fresh_issue_time(&inner, &payload, received_at) {
            inner.sample_clock_offset(issued_at, received_at);
        }
    }
    if let Some((command, request)) = admit(&inner, headers, &payload).await {
        spawn_execute(inner, command, request, arrival);
    }
}

/// Admits and runs a command the agent's own scheduler built from an
/// agent-side schedule: its signature was checked when the schedule was
/// accepted (see `agent_schedules`), so there is none to check here; the
/// ledger, the gates and the outbox treat it like any other.
pub(crate) async fn admit_local_and_spawn(inner: Arc<Inner>, schedule_id: &str, payload: Bytes) {
    if let Some((command, request)) =
        crate::admission::admit_local(&inner, schedule_id, &payload).await
    {
        spawn_execute(inner, command, request, Arrival::Late);
    }
}

/// How recently a request must have been admitted (from its replayed copy)
/// for its live copy to still count as a clock sample.
const SAMPLE_AFTER_ADMISSION: chrono::Duration = chrono::Duration::seconds(5);

/// The `issued_at` of a live command body, if it can serve as a clock
/// sample: the request is new, or was admitted moments ago (its replayed
/// copy won the race). An old command published again — a replay someone
/// staged on the broker — says nothing about the clock.
fn fresh_issue_time(
    inner: &Inner,
    payload: &[u8],
    received_at: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        request_id: String,
        #[serde(default)]
        issued_at: Option<chrono::DateTime<chrono::Utc>>,
    }
    let stamp = serde_json::from_slice::<Stamp>(payload).ok()?;
    let fresh = inner
        .ledger
        .admitted_at(&stamp.request_id)
        .is_none_or(|admitted| received_at - admitted < SAMPLE_AFTER_ADMISSION);
    fresh.then_some(stamp.issued_at).flatten()
}

/// The outcome of a command killed while it waited for `what`: exit -1
/// (a kill, as for a running command), not skipped, nothing spawned.
fn killed_before_start(inner: &Inner, what: &str) -> crate::report::Outcome {
    stopped(
        inner,
        exit_codes::KILLED_OR_TIMED_OUT,
        false,
        format!("kanade: killed before start (while waiting for {what}); nothing was run"),
    )
}

/// The safety gates for `command` now.
/// The outcome of a gate that stops `command` now, if one does.
fn gate_stop(inner: &Inner, command: &Command) -> Option<Outcome> {
    match gates(inner, command) {
        GateDecision::Stop(stop) => Some(stopped(
            inner,
            stop.exit_code,
            stop.skipped,
            stop.reason.to_string(),
        )),
        _ => None,
    }
}

fn gates(inner: &Inner, command: &Command) -> GateDecision {
    let now = inner.clock.now();
    let live = inner.live();
    let last_fresh_at = inner.last_fresh_at(&live);
    let script = live.scripts.get(&command.id);
    evaluate_gates(
        command,
        &GateInputs {
            now,
            fleet_now: inner.fleet_now(now, command.issued_at),
            delivery: Delivery::Broker,
            last_fresh_at,
            script_current: script.and_then(|s| s.current.as_deref()),
            script_status: script.and_then(|s| s.status.as_deref()),
            host: &inner.host,
        },
    )
}

/// The kill switch for a command: registered under its exec id (or its
/// request id when it has none).
struct KillRegistration {
    inner: Arc<Inner>,
    key: String,
    switch: watch::Sender<bool>,
}

impl KillRegistration {
    fn new(inner: &Arc<Inner>, key: String) -> (Self, watch::Receiver<bool>) {
        // Killed already (the kill arrived since the arrival check): the
        // switch starts thrown.
        let killed = inner
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key);
        let (switch, signal) = watch::channel(killed);
        inner
            .kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .push(switch.clone());
        (
            Self {
                inner: inner.clone(),
                key,
                switch,
            },
            signal,
        )
    }
}

impl Drop for KillRegistration {
    fn drop(&mut self) {
        let mut kills = self.inner.kills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = kills.get_mut(&self.key) {
            list.retain(|s| !s.same_channel(&self.switch));
            if list.is_empty() {
                kills.remove(&self.key);
            }
        }
    }
}

/// What the runner gets for attempt `attempt` of `command`, built afresh
/// for each attempt rather than cloned from a template kept for the whole
/// run: one set of strings alive at a time, none freed long after it was
/// made (a simulated fleet runs hundreds of thousands of commands a day).
fn run_spec(
    inner: &Inner,
    command: &Command,
    request: &SubjectToken,
    script: &str,
    attempt: u32,
) -> RunSpec {
    RunSpec {
        shell: command.shell,
        script: script.to_owned(),
        cwd: command.cwd.clone(),
        timeout: Duration::from_secs(command.timeout_secs.max(1)),
        run_as: command.run_as,
        request_id: command.request_id.clone(),
        attempt,
        process_record: Some(crate::orphans::record_path(
            &crate::orphans::records_dir(&inner.settings.state_dir),
            request.as_str(),
        )),
        env: vec![
            (
                "KANADE_PC_ID".into(),
                inner.settings.pc_id.as_str().to_owned(),
            ),
            ("KANADE_JOB_ID".into(), command.id.clone()),
            ("KANADE_JOB_VERSION".into(), command.version.clone()),
            (
                "KANADE_EXEC_ID".into(),
                command.exec_id.clone().unwrap_or_default(),
            ),
            ("KANADE_REQUEST_ID".into(), command.request_id.clone()),
        ],
    }
}

async fn execute(inner: Arc<Inner>, command: Command, request: SubjectToken, arrival: Arrival) {
    // A kill is durable: an execution killed before this command of it
    // arrived (or resumed) never starts here.
    if let Some(exec_id) = &command.exec_id {
        if crate::kills::killed_before_arrival(&inner, exec_id, arrival).await {
            let outcome = stopped(
                &inner,
                exit_codes::KILLED_OR_TIMED_OUT,
                false,
                "kanade: killed before start (the execution was killed before this agent could start it); nothing was run".to_owned(),
            );
            return finish(&inner, &command, &request, outcome).await;
        }
    }
    if let Some(outcome) = gate_stop(&inner, &command) {
        return finish(&inner, &command, &request, outcome).await;
    }
    let kill_key = command
        .exec_id
        .clone()
        .unwrap_or_else(|| request.to_string());
    let (registration, mut kill) = KillRegistration::new(&inner, kill_key);
    let jitter = command.jitter_secs.unwrap_or(0);
    // A kill that arrives while the command waits (jitter, a concurrency
    // slot) stops it there: nothing is spawned.
    if jitter > 0 {
        let millis = inner
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .u64(0..jitter * 1000);
        let jitter_wait = tokio::time::sleep(Duration::from_millis(millis));
        if unless_killed(&mut kill, jitter_wait).await.is_none() {
            drop(registration);
            return finish(
                &inner,
                &command,
                &request,
                killed_before_start(&inner, "its jitter"),
            )
            .await;
        }
    }
    // A command resumed after a restart does not start on a view of the
    // KV state this process never read (the broker was away at start): a
    // revoke, pin or kill that came before the restart still wins. (One
    // that arrives through the broker finds the watches following it.)
    let mut waited_for_state = false;
    if arrival == Arrival::Resumed
        && !inner
            .kv_state_loaded
            .load(std::sync::atomic::Ordering::SeqCst)
    {
        waited_for_state = true;
        let state_wait = crate::follow::kv_state_ready(&inner);
        if unless_killed(&mut kill, state_wait).await.is_none() {
            drop(registration);
            return finish(
                &inner,
                &command,
                &request,
                killed_before_start(&inner, "the agent's state to load"),
            )
            .await;
        }
    }
    let slot_wait = tokio::time::Instant::now();
    let permit = unless_killed(&mut kill, inner.limiter.acquire()).await;
    // After a wait, ask the kill record itself: a live kill or a watch
    // update lost on the way must not let the command start.
    let waited = jitter > 0 || waited_for_state || slot_wait.elapsed() > Duration::from_millis(100);
    if permit.is_some() && waited {
        if let Some(exec_id) = &command.exec_id {
            if crate::kills::killed_before_arrival(&inner, exec_id, Arrival::Late).await {
                drop(registration);
                return finish(
                    &inner,
                    &command,
                    &request,
                    killed_before_start(&inner, "its jitter"),
                )
                .await;
            }
        }
    }
    if permit.is_none() || *kill.borrow() {
        drop(registration);
        return finish(
            &inner,
            &command,
            &request,
            killed_before_start(&inner, "a concurrency slot"),
        )
        .await;
    }
    // Gates again: a revoke or deadline during the wait wins.
    if let Some(outcome) = gate_stop(&inner, &command) {
        return finish(&inner, &command, &request, outcome).await;
    }
    let script = match resolve_script(&inner, &command).await {
        Ok(script) => script,
        Err(why) => {
            tracing::warn!(request_id = %request, "{why}");
            let outcome = stopped(&inner, SCRIPT_FAILURE_EXIT, false, format!("kanade: {why}"));
            return finish(&inner, &command, &request, outcome).await;
        }
    };
    // A fetch may have waited out a broker failover: a revoke, deadline
    // or kill that came meanwhile still wins.
    if let Some(outcome) = gate_stop(&inner, &command) {
        return finish(&inner, &command, &request, outcome).await;
    }
    if *kill.borrow() {
        drop(registration);
        return finish(
            &inner,
            &command,
            &request,
            killed_before_start(&inner, "the script's fetch"),
        )
        .await;
    }
    if let Err(e) = inner.ledger.set_stage(request.as_str(), Stage::Launching) {
        tracing::error!("ledger not updated, not running: {e}");
        return;
    }
    publish_started(&inner, &command, &request).await;
    let mut attempts = 0u32;
    let started_at = inner.clock.now();
    let output = loop {
        attempts += 1;
        let attempt_spec = run_spec(&inner, &command, &request, &script, attempts);
        let output = inner.runner.run(attempt_spec, kill.clone()).await;
        let outcome = match output.end {
            RunEnd::Exited(code) => AttemptOutcome::Exited(code),
            RunEnd::TimedOut => AttemptOutcome::TimedOut,
            RunEnd::Killed => AttemptOutcome::Killed,
            RunEnd::SpawnFailed => AttemptOutcome::Exited(SCRIPT_FAILURE_EXIT),
        };
        match next_attempt(command.retry.as_ref(), attempts, outcome) {
            RetryDecision::Finish => break output,
            RetryDecision::RetryAfter(pause) => {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(pause) => {}
                    _ = crate::runner::kill_requested(&mut kill) => {
                        let mut output = output;
                        output.end = RunEnd::Killed;
                        output.stderr.extend_from_slice(b"\nkanade: killed during retry backoff; no further attempts\n");
                        break output;
                    }
                }
            }
        }
    };
    drop(registration);
    let mut output = output;
    if command.emit.is_some() {
        emit_events(
            &inner,
            &command,
            &request,
            &mut output.stderr,
            &output.stdout,
        )
        .await;
    }
    let exit_code = match output.end {
        RunEnd::Exited(code) => code,
        RunEnd::TimedOut | RunEnd::Killed => exit_codes::KILLED_OR_TIMED_OUT,
        RunEnd::SpawnFailed => SCRIPT_FAILURE_EXIT,
    };
    let outcome = Outcome {
        exit_code,
        skipped: false,
        stdout: output.stdout,
        stderr: output.stderr,
        started_at,
        finished_at: inner.clock.now(),
        attempts,
    };
    finish(&inner, &command, &request, outcome).await;
}
