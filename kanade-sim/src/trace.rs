//! The trace: every message on the bus and every harness action, one line
//! each, stamped with simulated milliseconds and hashed as it goes, plus
//! message counts by first subject token. Everything runs on one thread in
//! a fixed order (the backend's database calls run inline), so the lines
//! come in the same order for the same plan.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{Transport, TransportResult};
use kanade_core::wire::ExecResult;
use sha2::{Digest, Sha256};

/// Trace and message counts, fed by a subscription to every subject and
/// by the harness.
#[derive(Default)]
pub(crate) struct Recorder {
    lines: Vec<String>,
    keep: bool,
    hasher: Sha256,
    /// Messages on the bus by first subject token.
    messages: BTreeMap<String, u64>,
}

impl Recorder {
    /// A shared recorder; `keep`: keep the lines, not only their hash.
    pub(crate) fn shared(keep: bool) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            keep,
            ..Recorder::default()
        }))
    }

    fn line(&mut self, at: u128, line: String) {
        let line = format!("{at} {line}");
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if self.keep {
            self.lines.push(line);
        }
    }

    /// Takes everything recorded so far out of `recorder`.
    pub(crate) fn take(recorder: &Mutex<Recorder>) -> Recorder {
        std::mem::take(&mut *lock(recorder))
    }

    /// The kept lines, the message counts and the sha256 of the lines
    /// (hex).
    pub(crate) fn into_parts(self) -> (Vec<String>, BTreeMap<String, u64>, String) {
        let hash = format!("{:x}", self.hasher.finalize());
        (self.lines, self.messages, hash)
    }
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a harness line, stamped with the simulated time since `origin`.
pub(crate) fn trace_line(recorder: &Mutex<Recorder>, origin: tokio::time::Instant, line: String) {
    let at = origin.elapsed().as_millis();
    lock(recorder).line(at, line);
}

/// Subscribes to every subject on `memory` and records each message (with
/// the outcome of results) from a task of its own.
pub(crate) async fn record_bus(
    memory: &MemoryTransport,
    recorder: Arc<Mutex<Recorder>>,
    origin: tokio::time::Instant,
) -> TransportResult<()> {
    let mut all = memory.messages().subscribe(">").await?;
    tokio::spawn(async move {
        while let Some(message) = all.next().await {
            let at = origin.elapsed().as_millis();
            let kind = message.subject.split('.').next().unwrap_or("").to_owned();
            let mut recorder = lock(&recorder);
            *recorder.messages.entry(kind).or_default() += 1;
            let result = message
                .subject
                .starts_with("results.")
                .then(|| serde_json::from_slice::<ExecResult>(&message.payload).ok())
                .flatten();
            let detail = result.map_or_else(String::new, |r| {
                format!(
                    " {} {} exit {} skipped {} attempts {}",
                    r.request_id, r.pc_id, r.exit_code, r.skipped, r.attempts
                )
            });
            recorder.line(at, format!("{}{detail}", message.subject));
        }
    });
    Ok(())
}
