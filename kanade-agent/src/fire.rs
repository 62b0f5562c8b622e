//! The fire path: admission → gates → jitter → slot → gates again →
//! script → start event → attempts with retry → one result.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kanade_core::names::subjects::{self, OutputStream};
use kanade_core::names::{SubjectToken, TokenKind, OBJECT_RESULT_OUTPUT, OBJECT_SCRIPTS};
use kanade_core::policy::exit_codes;
use kanade_core::policy::overflow::overflows;
use kanade_core::policy::retry::{next_attempt, AttemptOutcome, RetryDecision};
use kanade_core::policy::script::{sha256_hex, verify_script_body, MAX_SCRIPT_BYTES};
use kanade_core::policy::{evaluate_gates, Delivery, GateDecision, GateInputs};
use kanade_core::transport::ObjectStoreConfig;
use kanade_core::wire::{Command, EventStarted, ExecResult};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::agent::Inner;
use crate::ledger::{Admission, Stage};
use crate::outbox::{write_durably, OutboxEntry};
use crate::runner::{RunEnd, RunSpec};
use crate::SCRIPT_FAILURE_EXIT;

/// Reports commands that were running when the agent stopped (exit 121,
/// unless their real result is already waiting in the outbox) and returns
/// the admitted commands that had not started, to run them again.
pub(crate) async fn recover(inner: &Arc<Inner>) -> Vec<(Command, SubjectToken)> {
    let mut resume = Vec::new();
    for entry in inner.ledger.in_stage(Stage::Pending) {
        let stored = entry
            .command
            .as_deref()
            .and_then(|text| serde_json::from_str::<Command>(text).ok())
            .zip(SubjectToken::new(TokenKind::RequestId, entry.request_id.clone()).ok());
        match stored {
            Some(work) => resume.push(work),
            None => inner.ledger.forget(&entry.request_id),
        }
    }
    for entry in inner.ledger.in_stage(Stage::Launching) {
        let Ok(request) = SubjectToken::new(TokenKind::RequestId, entry.request_id.clone()) else {
            continue;
        };
        if inner.outbox.has_pending(&subjects::results(&request)) {
            // It finished; only the ledger update was lost.
            let _ = inner.ledger.set_stage(&entry.request_id, Stage::Finished);
            continue;
        }
        let now = inner.clock.now();
        let result = ExecResult {
            result_id: result_id(&request, inner),
            request_id: entry.request_id.clone(),
            exec_id: entry.exec_id.clone(),
            pc_id: inner.settings.pc_id.to_string(),
            exit_code: exit_codes::AGENT_RESTARTED,
            skipped: false,
            stdout: String::new(),
            stderr: "kanade: the agent restarted while this command was launching or running; outcome unknown, not relaunched".into(),
            started_at: entry.admitted_at,
            finished_at: now,
            stdout_object: None,
            stderr_object: None,
            manifest_id: entry.manifest_id.clone(),
            attempts: 1,
        };
        tracing::warn!(
            request_id = entry.request_id,
            "reporting exit 121 for a command interrupted by a restart"
        );
        publish_result(inner, &request, result).await;
    }
    resume
}

/// Runs an admitted command in the background, counted as in flight.
pub(crate) fn spawn_execute(inner: Arc<Inner>, command: Command, request: SubjectToken) {
    let mut executions = inner.executions.lock().unwrap_or_else(|p| p.into_inner());
    // A message handler still in flight when the agent stopped (or halted)
    // must not start work behind its back: the ledger keeps the command
    // pending and the next start resumes it. Checked under the lock that
    // halting takes, so no spawn slips in after the abort.
    if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let guard = crate::agent::InFlight::enter(&inner);
    while executions.try_join_next().is_some() {}
    let task_inner = inner.clone();
    executions.spawn(async move {
        execute(task_inner, command, request).await;
        drop(guard);
    });
}

/// Handles one command message from a live subscription.
pub(crate) async fn handle(inner: Arc<Inner>, payload: Bytes) {
    admit_and_spawn(inner, payload).await;
}

/// Admits a command (at most once per request id) and runs it in the background.
pub(crate) async fn admit_and_spawn(inner: Arc<Inner>, payload: Bytes) {
    if let Some((command, request)) = admit(&inner, &payload).await {
        spawn_execute(inner, command, request);
    }
}

async fn admit(inner: &Arc<Inner>, payload: &[u8]) -> Option<(Command, SubjectToken)> {
    let command: Command = match serde_json::from_slice(payload) {
        Ok(command) => command,
        Err(e) => {
            refuse_malformed(inner, payload, &e.to_string()).await;
            return None;
        }
    };
    let request = match SubjectToken::new(TokenKind::RequestId, command.request_id.clone()) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!("refusing a command with an unusable request id: {e}");
            return None;
        }
    };
    let digest = sha256_hex(payload);
    let admission = inner.ledger.admit(
        request.as_str(),
        &digest,
        command.exec_id.clone(),
        Some(command.id.clone()),
        Some(String::from_utf8_lossy(payload).into_owned()),
        inner.clock.now(),
    );
    match admission {
        Ok(Admission::Admitted) => Some((command, request)),
        Ok(Admission::Duplicate) => {
            tracing::debug!(request_id = %request, "duplicate delivery ignored");
            None
        }
        Ok(Admission::Conflict { recorded }) => {
            tracing::error!(
                request_id = %request,
                recorded,
                received = digest,
                "conflict: this request id was already admitted with different command bytes; refused"
            );
            None
        }
        Err(e) => {
            tracing::error!(request_id = %request, "cannot record admission, not running: {e}");
            None
        }
    }
}

/// A command that does not decode: log it and, if it names a usable
/// request id, answer with a failure result saying why.
async fn refuse_malformed(inner: &Arc<Inner>, payload: &[u8], why: &str) {
    tracing::warn!("malformed command refused: {why}");
    let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let Some(request) =
        field("request_id").and_then(|id| SubjectToken::new(TokenKind::RequestId, id).ok())
    else {
        return;
    };
    if inner
        .ledger
        .admit(
            request.as_str(),
            &sha256_hex(payload),
            None,
            None,
            None,
            inner.clock.now(),
        )
        .ok()
        != Some(Admission::Admitted)
    {
        return;
    }
    let now = inner.clock.now();
    let result = ExecResult {
        result_id: result_id(&request, inner),
        request_id: request.to_string(),
        exec_id: field("exec_id").or_else(|| field("job_id")),
        pc_id: inner.settings.pc_id.to_string(),
        exit_code: SCRIPT_FAILURE_EXIT,
        skipped: false,
        stdout: String::new(),
        stderr: format!("kanade: refused: malformed command: {why}"),
        started_at: now,
        finished_at: now,
        stdout_object: None,
        stderr_object: None,
        manifest_id: field("id"),
        attempts: 1,
    };
    publish_result(inner, &request, result).await;
}

fn result_id(request: &SubjectToken, inner: &Inner) -> String {
    format!("{request}-{}", inner.settings.pc_id)
}

fn gates(inner: &Inner, command: &Command) -> GateDecision {
    let last_fresh_at = inner.last_fresh_at();
    let live = inner.live();
    evaluate_gates(
        command,
        &GateInputs {
            now: inner.clock.now(),
            delivery: Delivery::Broker,
            last_fresh_at,
            script_current: live.script_current.get(&command.id).map(String::as_str),
            script_status: live.script_status.get(&command.id).map(String::as_str),
            host: &inner.host,
        },
    )
}

struct Outcome {
    exit_code: i32,
    skipped: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    attempts: u32,
}

async fn finish(inner: &Arc<Inner>, command: &Command, request: &SubjectToken, outcome: Outcome) {
    let result = ExecResult {
        result_id: result_id(request, inner),
        request_id: command.request_id.clone(),
        exec_id: command.exec_id.clone(),
        pc_id: inner.settings.pc_id.to_string(),
        exit_code: outcome.exit_code,
        skipped: outcome.skipped,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        started_at: outcome.started_at,
        finished_at: outcome.finished_at,
        stdout_object: None,
        stderr_object: None,
        manifest_id: Some(command.id.clone()),
        attempts: outcome.attempts,
    };
    publish_result(inner, request, result).await;
}

fn stopped(inner: &Inner, exit_code: i32, skipped: bool, why: String) -> Outcome {
    let now = inner.clock.now();
    Outcome {
        exit_code,
        skipped,
        stdout: Vec::new(),
        stderr: why.into_bytes(),
        started_at: now,
        finished_at: now,
        attempts: 1,
    }
}

/// Moves output over the inline threshold to `result_output`, then writes
/// the result to the outbox (which publishes it at once if it can).
async fn publish_result(inner: &Arc<Inner>, request: &SubjectToken, mut result: ExecResult) {
    let pc = &inner.settings.pc_id;
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let text = match stream {
            OutputStream::Stdout => &mut result.stdout,
            OutputStream::Stderr => &mut result.stderr,
        };
        if !overflows(text.len()) {
            continue;
        }
        let key = subjects::result_output_key(request, pc, stream);
        let stored = match inner
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_RESULT_OUTPUT))
            .await
        {
            Ok(store) => store.put(&key, &mut text.as_bytes()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                text.clear();
                match stream {
                    OutputStream::Stdout => result.stdout_object = Some(key),
                    OutputStream::Stderr => result.stderr_object = Some(key),
                }
            }
            Err(e) => {
                tracing::warn!(key, "overflow upload failed, truncating inline output: {e}");
                let keep = kanade_core::names::STDOUT_INLINE_THRESHOLD;
                let capped =
                    kanade_core::policy::overflow::cap_capture(text.as_bytes(), keep - 256);
                *text = String::from_utf8_lossy(&capped).into_owned();
            }
        }
    }
    let payload = match serde_json::to_string(&result) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!("result not encoded: {e}");
            return;
        }
    };
    let entry = OutboxEntry {
        subject: subjects::results(request),
        message_id: result.result_id.clone(),
        payload,
    };
    // Durable first; the ledger says Finished as soon as the result is on
    // disk, so a restart never reports 121 over a real result.
    match inner.outbox.persist(&entry) {
        Ok(path) => {
            if let Err(e) = inner.ledger.set_stage(request.as_str(), Stage::Finished) {
                tracing::warn!("ledger not updated: {e}");
            }
            inner.outbox.publish_now(&path).await;
        }
        Err(e) => {
            tracing::error!(request_id = %request, "result could not be written to the outbox: {e}")
        }
    }
}

/// Resolves the script body: inline, or from the `scripts` object store
/// through an on-disk cache keyed by digest (re-hashed on every read).
async fn resolve_script(inner: &Arc<Inner>, command: &Command) -> Result<String, String> {
    let Some(object) = &command.script_object else {
        if command.script.len() > MAX_SCRIPT_BYTES {
            return Err(format!(
                "inline script is {} bytes; at most {MAX_SCRIPT_BYTES} are allowed",
                command.script.len()
            ));
        }
        return Ok(command.script.clone());
    };
    let digest = command
        .script_object_sha256
        .as_deref()
        .ok_or_else(|| format!("script_object {object:?} has no script_object_sha256"))?
        .to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "script_object_sha256 {digest:?} is not a sha256 hex digest"
        ));
    }
    let cache = inner
        .settings
        .state_dir
        .join("scripts")
        .join(format!("{digest}.body"));
    if let Ok(bytes) = std::fs::read(&cache) {
        match verify_script_body(&bytes, &digest) {
            Ok(body) => return Ok(body.to_owned()),
            Err(e) => {
                tracing::warn!(path = %cache.display(), "cached script failed verification, refetching: {e}");
                let _ = std::fs::remove_file(&cache);
            }
        }
    }
    let store = inner
        .transport
        .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
        .await
        .map_err(|e| format!("scripts store: {e}"))?;
    let reader = store
        .get(object)
        .await
        .map_err(|e| format!("fetching script {object:?}: {e}"))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_SCRIPT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading script {object:?}: {e}"))?;
    let body = verify_script_body(&bytes, &digest)
        .map_err(|e| format!("script {object:?} refused: {e}"))?;
    if let Err(e) = write_durably(&cache, &bytes) {
        tracing::warn!("script cache not written: {e}");
    }
    Ok(body.to_owned())
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
        let (switch, signal) = watch::channel(false);
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

async fn execute(inner: Arc<Inner>, command: Command, request: SubjectToken) {
    if let GateDecision::Stop(stop) = gates(&inner, &command) {
        let outcome = stopped(
            &inner,
            stop.exit_code,
            stop.skipped,
            stop.reason.to_string(),
        );
        return finish(&inner, &command, &request, outcome).await;
    }
    let kill_key = command
        .exec_id
        .clone()
        .unwrap_or_else(|| request.to_string());
    let (registration, mut kill) = KillRegistration::new(&inner, kill_key);
    let jitter = command.jitter_secs.unwrap_or(0);
    if jitter > 0 {
        let millis = inner
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .u64(0..jitter * 1000);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    let _permit = inner.limiter.acquire().await;
    // Gates again: a revoke or deadline during the wait wins.
    if let GateDecision::Stop(stop) = gates(&inner, &command) {
        let outcome = stopped(
            &inner,
            stop.exit_code,
            stop.skipped,
            stop.reason.to_string(),
        );
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
    if let Err(e) = inner.ledger.set_stage(request.as_str(), Stage::Launching) {
        tracing::error!("ledger not updated, not running: {e}");
        return;
    }
    publish_started(&inner, &command, &request).await;
    let spec = RunSpec {
        shell: command.shell,
        script,
        cwd: command.cwd.clone(),
        timeout: Duration::from_secs(command.timeout_secs.max(1)),
        run_as: command.run_as,
        request_id: command.request_id.clone(),
        attempt: 1,
    };
    let mut attempts = 0u32;
    let started_at = inner.clock.now();
    let output = loop {
        attempts += 1;
        let attempt_spec = RunSpec {
            attempt: attempts,
            ..spec.clone()
        };
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

/// Publishes a job's stdout NDJSON as observability events (through the
/// outbox); bad lines are counted in a note on the result's stderr.
async fn emit_events(
    inner: &Arc<Inner>,
    command: &Command,
    request: &SubjectToken,
    stderr: &mut Vec<u8>,
    stdout: &[u8],
) {
    let text = String::from_utf8_lossy(stdout);
    let (events, bad) = crate::presence::parse_emitted_events(
        &text,
        inner.settings.pc_id.as_str(),
        &command.id,
        inner.clock.now(),
    );
    let subject = subjects::obs(&inner.settings.pc_id);
    for (n, event) in events.iter().enumerate() {
        let Ok(payload) = serde_json::to_string(event) else {
            continue;
        };
        let entry = OutboxEntry {
            subject: subject.clone(),
            message_id: format!("obs-{}-{n}", result_id(request, inner)),
            payload,
        };
        if let Err(e) = inner.outbox.send(entry).await {
            tracing::warn!("emitted event not written: {e}");
        }
    }
    if bad > 0 {
        tracing::warn!(request_id = %request, bad, "emitted lines that are not events were skipped");
        stderr.extend_from_slice(
            format!("\nkanade: {bad} emitted line(s) were not valid events and were skipped\n")
                .as_bytes(),
        );
    }
}

async fn publish_started(inner: &Arc<Inner>, command: &Command, request: &SubjectToken) {
    let exec = command
        .exec_id
        .as_ref()
        .and_then(|id| SubjectToken::new(TokenKind::ExecId, id.clone()).ok())
        .unwrap_or_else(|| request.clone());
    let event = EventStarted {
        result_id: result_id(request, inner),
        request_id: command.request_id.clone(),
        exec_id: command.exec_id.clone(),
        pc_id: inner.settings.pc_id.to_string(),
        started_at: inner.clock.now(),
        manifest_id: Some(command.id.clone()),
        version: Some(command.version.clone()),
    };
    let Ok(payload) = serde_json::to_string(&event) else {
        return;
    };
    let entry = OutboxEntry {
        subject: subjects::events_started(&exec, &inner.settings.pc_id),
        message_id: format!("started-{}", event.result_id),
        payload,
    };
    if let Err(e) = inner.outbox.send(entry).await {
        tracing::warn!("start event not written: {e}");
    }
}
