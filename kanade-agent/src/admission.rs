//! Admission: each request id is admitted at most once through the ledger
//! (a malformed command naming one is answered with a failure), and at
//! start the ledger is recovered — what was running is reported as exit
//! 121, what was admitted but not started is handed back to run.

use std::sync::Arc;
use std::time::Duration;

use kanade_core::names::subjects;
use kanade_core::names::{SubjectToken, TokenKind};
use kanade_core::policy::exit_codes;
use kanade_core::policy::script::sha256_hex;
use kanade_core::wire::{Command, ExecResult};

use crate::ledger::{Admission, NewEntry, Stage};
use crate::report::{publish_result, result_id};
use crate::state::Inner;
use crate::SCRIPT_FAILURE_EXIT;

/// Reports commands that were running when the agent stopped (exit 121,
/// unless their real result is already waiting in the outbox) and returns
/// the admitted commands that had not started, to run them again.
pub(crate) async fn recover(inner: &Arc<Inner>) -> Vec<(Command, SubjectToken)> {
    let mut resume = Vec::new();
    for entry in inner.ledger.in_stage(Stage::Pending) {
        // Admitted under the trust of the time; checked again under today's
        // (a mode turned to enforce, a key removed from the ring).
        if let Some(refusal) = recheck(inner, &entry) {
            tracing::warn!(
                request_id = entry.request_id,
                "pending command refused at restart: {refusal}"
            );
            inner.ledger.forget(&entry.request_id);
            if let Some(text) = &entry.command {
                refuse_unverified(inner, text.as_bytes(), &refusal).await;
            }
            continue;
        }
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
        // What that run left behind is stopped before it is reported.
        let left_over = crate::orphans::terminate_left_over(
            &crate::orphans::records_dir(&inner.settings.state_dir),
            &entry.request_id,
            Duration::from_secs(5),
        )
        .await;
        let mut stderr = "kanade: the agent restarted while this command was launching or running; outcome unknown, not relaunched".to_owned();
        if let Some(note) = left_over {
            stderr.push('\n');
            stderr.push_str(&note);
        }
        let now = inner.clock.now();
        let result = ExecResult {
            result_id: result_id(&request, inner),
            request_id: entry.request_id.clone(),
            exec_id: entry.exec_id.clone(),
            pc_id: inner.settings.pc_id.as_str().to_owned(),
            exit_code: exit_codes::AGENT_RESTARTED,
            skipped: false,
            stdout: String::new(),
            stderr,
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

/// Decodes and admits a command: `None` if it is malformed (answered
/// when it names a request id), a duplicate, a conflict or not recorded.
pub(crate) async fn admit(
    inner: &Arc<Inner>,
    headers: &kanade_core::transport::Headers,
    payload: &[u8],
) -> Option<(Command, SubjectToken)> {
    admit_recorded(inner, signature_headers(headers), payload).await
}

/// What the ledger keeps, in place of signature headers, for a command the
/// agent's own scheduler built (the schedule's id): no message header can
/// carry it (only `Kanade-Sig*` headers are kept from messages), and a
/// restart does not re-check its signature (the schedule was verified).
pub(crate) const LOCAL_FIRE_MARK: &str = "Kanade-Local-Fire";

/// [`admit`] for a fire of agent-side schedule `schedule_id`.
pub(crate) async fn admit_local(
    inner: &Arc<Inner>,
    schedule_id: &str,
    payload: &[u8],
) -> Option<(Command, SubjectToken)> {
    let mark = [(LOCAL_FIRE_MARK.to_owned(), schedule_id.to_owned())]
        .into_iter()
        .collect();
    admit_recorded(inner, mark, payload).await
}

async fn admit_recorded(
    inner: &Arc<Inner>,
    signature: std::collections::BTreeMap<String, String>,
    payload: &[u8],
) -> Option<(Command, SubjectToken)> {
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
    // A redelivery is answered without copying the command for an entry.
    let admission = match inner.ledger.recorded(request.as_str(), &digest) {
        Some(known) => Ok(known),
        None => inner.ledger.admit(
            NewEntry {
                request_id: request.to_string(),
                command_sha256: digest.clone(),
                exec_id: command.exec_id.clone(),
                manifest_id: Some(command.id.clone()),
                command: Some(String::from_utf8_lossy(payload).into_owned()),
                signature,
            },
            inner.clock.now(),
        ),
    };
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
            NewEntry {
                request_id: request.to_string(),
                command_sha256: sha256_hex(payload),
                ..NewEntry::default()
            },
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
        pc_id: inner.settings.pc_id.as_str().to_owned(),
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

/// The signature headers of a message (what the ledger keeps).
fn signature_headers(
    headers: &kanade_core::transport::Headers,
) -> std::collections::BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| name.starts_with("Kanade-Sig"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Why a pending ledger entry may no longer run on this host (`None`:
/// it may).
fn recheck(
    inner: &Inner,
    entry: &crate::ledger::Entry,
) -> Option<kanade_core::policy::signature::SignatureRefusal> {
    if !inner.trust.enforcing() || entry.signature.contains_key(LOCAL_FIRE_MARK) {
        return None;
    }
    let body = entry.command.as_deref().unwrap_or_default().as_bytes();
    let now_ms = inner.clock.now().timestamp_millis();
    match inner.trust.check(&entry.signature, body, now_ms) {
        crate::trust::Verdict::Refuse(refusal) => Some(refusal),
        crate::trust::Verdict::Run { .. } => None,
    }
}

/// A command refused by an enforcing host (its signature did not verify):
/// answered with exit 123, `skipped: false`, stderr `refused: <reason>`,
/// under a result id of its own (`<request>-<pc>-refused`), so the request
/// id is not consumed: the same request properly signed still runs, and
/// its result is not hidden behind the refusal's.
pub(crate) async fn refuse_unverified(
    inner: &Arc<Inner>,
    payload: &[u8],
    refusal: &kanade_core::policy::signature::SignatureRefusal,
) {
    let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    tracing::warn!(request_id = ?field("request_id"), "command refused: {refusal}");
    let Some(request) =
        field("request_id").and_then(|id| SubjectToken::new(TokenKind::RequestId, id).ok())
    else {
        return;
    };
    let now = inner.clock.now();
    let result = ExecResult {
        result_id: format!("{}-refused", result_id(&request, inner)),
        request_id: request.to_string(),
        // Nothing from an unverified body is trusted: no execution id (it
        // would move that execution's counters) and no job id.
        exec_id: None,
        pc_id: inner.settings.pc_id.as_str().to_owned(),
        exit_code: exit_codes::SIGNATURE_REFUSED,
        skipped: false,
        stdout: String::new(),
        stderr: format!("refused: {refusal}"),
        started_at: now,
        finished_at: now,
        stdout_object: None,
        stderr_object: None,
        manifest_id: None,
        attempts: 0,
    };
    publish_result(inner, &request, result).await;
}
