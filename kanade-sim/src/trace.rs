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
        self.line_parts(at, &line, None);
    }

    /// Adds the line `"{at} {subject}{detail}"` (detail already starting
    /// with its space), hashing the pieces where they lie: a fleet-day
    /// records millions of bus lines, and only a kept trace needs them
    /// joined into one string.
    fn line_parts(&mut self, at: u128, subject: &str, detail: Option<&str>) {
        let mut digits = [0u8; 39];
        let at = decimal(at, &mut digits);
        self.hasher.update(at.as_bytes());
        self.hasher.update(b" ");
        self.hasher.update(subject.as_bytes());
        if let Some(detail) = detail {
            self.hasher.update(detail.as_bytes());
        }
        self.hasher.update(b"\n");
        if self.keep {
            self.lines
                .push(format!("{at} {subject}{}", detail.unwrap_or_default()));
        }
    }

    /// Counts one bus message under its first subject token.
    fn count(&mut self, kind: &str) {
        match self.messages.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                self.messages.insert(kind.to_owned(), 1);
            }
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

/// `n` in decimal, written into the end of `buffer` (39 digits hold any
/// `u128`).
fn decimal(mut n: u128, buffer: &mut [u8; 39]) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).unwrap_or("0")
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
            let kind = message.subject.split('.').next().unwrap_or("");
            let mut recorder = lock(&recorder);
            recorder.count(kind);
            let result = message
                .subject
                .starts_with("results.")
                .then(|| serde_json::from_slice::<ExecResult>(&message.payload).ok())
                .flatten();
            let detail = result.map(|r| {
                format!(
                    " {} {} exit {} skipped {} attempts {}",
                    r.request_id, r.pc_id, r.exit_code, r.skipped, r.attempts
                )
            });
            recorder.line_parts(at, &message.subject, detail.as_deref());
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_what_display_does() {
        let mut buffer = [0u8; 39];
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            86_400_000,
            u64::MAX as u128,
            u128::MAX,
        ] {
            assert_eq!(decimal(n, &mut buffer), n.to_string());
        }
    }

    #[test]
    fn a_line_in_parts_hashes_and_keeps_as_the_joined_line() {
        let mut parts = Recorder {
            keep: true,
            ..Recorder::default()
        };
        parts.line_parts(1234, "results.pc-1", Some(" r1 pc-1 exit 0"));
        parts.line_parts(0, "heartbeat.pc-1", None);
        let mut joined = Recorder {
            keep: true,
            ..Recorder::default()
        };
        joined.line(1234, "results.pc-1 r1 pc-1 exit 0".into());
        joined.line(0, "heartbeat.pc-1".into());
        let (parts_lines, _, parts_hash) = parts.into_parts();
        let (joined_lines, _, joined_hash) = joined.into_parts();
        assert_eq!(parts_lines, joined_lines);
        assert_eq!(parts_lines[0], "1234 results.pc-1 r1 pc-1 exit 0");
        assert_eq!(parts_hash, joined_hash);
        let mut plain = Sha256::new();
        plain.update(b"1234 results.pc-1 r1 pc-1 exit 0\n0 heartbeat.pc-1\n");
        assert_eq!(parts_hash, format!("{:x}", plain.finalize()));
    }

    #[test]
    fn messages_are_counted_by_kind() {
        let mut recorder = Recorder::default();
        recorder.count("heartbeat");
        recorder.count("heartbeat");
        recorder.count("results");
        let (_, messages, _) = recorder.into_parts();
        assert_eq!(messages.get("heartbeat"), Some(&2));
        assert_eq!(messages.get("results"), Some(&1));
    }
}
