//! What a command reports, always through the outbox: its start event, the
//! events its output emits, and exactly one result (output over the inline
//! threshold moved to `result_output` first).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kanade_core::names::subjects::{self, OutputStream};
use kanade_core::names::{SubjectToken, TokenKind, OBJECT_RESULT_OUTPUT};
use kanade_core::policy::overflow::streams_to_overflow;
use kanade_core::transport::ObjectStoreConfig;
use kanade_core::wire::{Command, EventStarted, ExecResult};

use crate::ledger::Stage;
use crate::outbox::OutboxEntry;
use crate::state::Inner;

/// The result id of `request` on this agent.
pub(crate) fn result_id(request: &SubjectToken, inner: &Inner) -> String {
    format!("{request}-{}", inner.settings.pc_id)
}

/// How a command ended, before it becomes an [`ExecResult`].
pub(crate) struct Outcome {
    pub exit_code: i32,
    pub skipped: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub attempts: u32,
}

/// Publishes `command`'s one result.
pub(crate) async fn finish(
    inner: &Arc<Inner>,
    command: &Command,
    request: &SubjectToken,
    outcome: Outcome,
) {
    let result = ExecResult {
        result_id: result_id(request, inner),
        request_id: command.request_id.clone(),
        exec_id: command.exec_id.clone(),
        pc_id: inner.settings.pc_id.as_str().to_owned(),
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

/// The outcome of a command stopped before it ran, saying `why` on stderr.
pub(crate) fn stopped(inner: &Inner, exit_code: i32, skipped: bool, why: String) -> Outcome {
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
pub(crate) async fn publish_result(
    inner: &Arc<Inner>,
    request: &SubjectToken,
    mut result: ExecResult,
) {
    let pc = &inner.settings.pc_id;
    // Decided on the encoded size against the transport's real limit (a
    // margin kept for headers and the subject): every result fits.
    let rest = {
        let mut bare = result.clone();
        bare.stdout.clear();
        bare.stderr.clear();
        serde_json::to_vec(&bare).map_or(4096, |v| v.len())
    };
    let max_payload = inner
        .transport
        .capabilities()
        .max_payload_bytes
        .saturating_sub(8 * 1024);
    let (out, err) = streams_to_overflow(&result.stdout, &result.stderr, rest, max_payload);
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let overflow = match stream {
            OutputStream::Stdout => out,
            OutputStream::Stderr => err,
        };
        let text = match stream {
            OutputStream::Stdout => &mut result.stdout,
            OutputStream::Stderr => &mut result.stderr,
        };
        if !overflow {
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
            inner.outbox.publish_persisted(&path, entry).await;
        }
        Err(e) => {
            tracing::error!(request_id = %request, "result could not be written to the outbox: {e}")
        }
    }
}

/// Publishes a job's stdout NDJSON as observability events (through the
/// outbox); bad lines are counted in a note on the result's stderr.
pub(crate) async fn emit_events(
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

/// Publishes the start event of `command` (through the outbox).
pub(crate) async fn publish_started(inner: &Arc<Inner>, command: &Command, request: &SubjectToken) {
    let exec = command
        .exec_id
        .as_ref()
        .and_then(|id| SubjectToken::new(TokenKind::ExecId, id.clone()).ok())
        .unwrap_or_else(|| request.clone());
    let event = EventStarted {
        result_id: result_id(request, inner),
        request_id: command.request_id.clone(),
        exec_id: command.exec_id.clone(),
        pc_id: inner.settings.pc_id.as_str().to_owned(),
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

/// Reports a change of signature outcome on an observing host as an
/// `ObsEvent` of that kind (`command_signature_ok`, `…_absent`, …).
pub(crate) async fn publish_signature_event(inner: &Arc<Inner>, kind: &'static str) {
    publish_obs(inner, kind, serde_json::Value::Null).await;
}

/// Publishes an agent `ObsEvent` of `kind` through the outbox.
pub(crate) async fn publish_obs(inner: &Arc<Inner>, kind: &str, payload: serde_json::Value) {
    let event = kanade_core::wire::ObsEvent {
        pc_id: inner.settings.pc_id.as_str().to_owned(),
        at: inner.clock.now(),
        kind: kind.to_owned(),
        source: "agent".into(),
        event_record_id: None,
        payload,
    };
    let Ok(payload) = serde_json::to_string(&event) else {
        return;
    };
    let entry = OutboxEntry {
        subject: subjects::obs(&inner.settings.pc_id),
        message_id: format!(
            "obs-{}-{kind}-{}",
            inner.settings.pc_id,
            event.at.timestamp_nanos_opt().unwrap_or_default()
        ),
        payload,
    };
    if let Err(e) = inner.outbox.send(entry).await {
        tracing::warn!("signature event not written: {e}");
    }
}
