//! The trace: every message on the bus and every harness action, one line
//! each, stamped with simulated milliseconds and hashed as it goes, plus
//! message counts by first subject token. Everything runs on one thread in
//! a fixed order (the backend's database calls run inline), so the lines
//! come in the same order for the same plan.
//!
//! The simulation's thread only stamps each line and queues it, in that
//! order; a thread of the recorder's own counts, formats and hashes them
//! (a fleet-day records millions), on the machine's other core. The lines
//! are hashed in the order they were queued, so the hash is the same.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::{Transport, TransportResult};
use kanade_core::wire::ExecResult;
use sha2::{Digest, Sha256};

/// A line as the simulation's thread queues it.
enum Entry {
    /// A harness line.
    Line { at: u128, line: String },
    /// A message on the bus: counted under its subject's first token; a
    /// result's outcome (from `payload`) goes on its line.
    Bus {
        at: u128,
        subject: String,
        payload: Option<Bytes>,
    },
}

/// Lines queued before they go to the tallying thread in one hand-off (a
/// hand-off per line would wake that thread millions of times a day).
const CHUNK: usize = 512;

/// The trace being recorded: lines are queued here in order and tallied
/// on a thread of their own ([`Tally`]).
pub(crate) struct Recorder {
    /// Keep the lines, not only their hash.
    keep: bool,
    queued: Vec<Entry>,
    chunks: Option<Sender<Vec<Entry>>>,
    tallying: Option<std::thread::JoinHandle<Tally>>,
}

impl Recorder {
    /// A shared recorder; `keep`: keep the lines, not only their hash.
    pub(crate) fn shared(keep: bool) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::start(keep)))
    }

    fn start(keep: bool) -> Recorder {
        let (chunks, arriving) = channel::<Vec<Entry>>();
        let tallying = std::thread::Builder::new()
            .name("kanade-sim-trace".into())
            .spawn(move || {
                let mut tally = Tally {
                    keep,
                    ..Tally::default()
                };
                while let Ok(chunk) = arriving.recv() {
                    for entry in chunk {
                        tally.add(entry);
                    }
                }
                tally
            });
        match tallying {
            Ok(tallying) => Recorder {
                keep,
                queued: Vec::with_capacity(CHUNK),
                chunks: Some(chunks),
                tallying: Some(tallying),
            },
            // No thread: the lines are tallied when taken, on the
            // simulation's thread (the same trace, later).
            Err(_) => Recorder::in_place(keep),
        }
    }

    /// A recorder without a thread: its lines are tallied when taken.
    fn in_place(keep: bool) -> Recorder {
        Recorder {
            keep,
            queued: Vec::new(),
            chunks: None,
            tallying: None,
        }
    }

    fn queue(&mut self, entry: Entry) {
        self.queued.push(entry);
        if self.queued.len() >= CHUNK {
            if let Some(chunks) = &self.chunks {
                let chunk = std::mem::replace(&mut self.queued, Vec::with_capacity(CHUNK));
                if let Err(refused) = chunks.send(chunk) {
                    // The thread is gone: the lines wait for `take`.
                    self.queued = refused.0;
                    self.chunks = None;
                }
            }
        }
    }

    /// Takes everything recorded so far out of `recorder` (it goes on
    /// recording into a fresh trace that keeps no lines, without a thread).
    ///
    /// # Panics
    /// Passes on a panic of the tallying thread (a trace it did not finish
    /// has no hash to report).
    pub(crate) fn take(recorder: &Mutex<Recorder>) -> Tally {
        let mut taken = std::mem::replace(&mut *lock(recorder), Recorder::in_place(false));
        let queued = std::mem::take(&mut taken.queued);
        drop(taken.chunks.take());
        let mut tally = match taken.tallying.take().map(std::thread::JoinHandle::join) {
            Some(Ok(tally)) => tally,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Tally {
                keep: taken.keep,
                ..Tally::default()
            },
        };
        for entry in queued {
            tally.add(entry);
        }
        tally
    }
}

/// Trace and message counts, tallied from the queued lines.
#[derive(Default)]
pub(crate) struct Tally {
    lines: Vec<String>,
    keep: bool,
    hasher: Sha256,
    /// Messages on the bus by first subject token.
    messages: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, entry: Entry) {
        match entry {
            Entry::Line { at, line } => self.line(at, line),
            Entry::Bus {
                at,
                subject,
                payload,
            } => {
                self.count(subject.split('.').next().unwrap_or(""));
                let detail = payload
                    .and_then(|payload| serde_json::from_slice::<ExecResult>(&payload).ok())
                    .map(|r| {
                        format!(
                            " {} {} exit {} skipped {} attempts {}",
                            r.request_id, r.pc_id, r.exit_code, r.skipped, r.attempts
                        )
                    });
                self.line_parts(at, &subject, detail.as_deref());
            }
        }
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
    lock(recorder).queue(Entry::Line { at, line });
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
            let payload = message
                .subject
                .starts_with("results.")
                .then_some(message.payload);
            lock(&recorder).queue(Entry::Bus {
                at,
                subject: message.subject,
                payload,
            });
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
        let mut parts = Tally {
            keep: true,
            ..Tally::default()
        };
        parts.line_parts(1234, "results.pc-1", Some(" r1 pc-1 exit 0"));
        parts.line_parts(0, "heartbeat.pc-1", None);
        let mut joined = Tally {
            keep: true,
            ..Tally::default()
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
        let mut recorder = Tally::default();
        recorder.count("heartbeat");
        recorder.count("heartbeat");
        recorder.count("results");
        let (_, messages, _) = recorder.into_parts();
        assert_eq!(messages.get("heartbeat"), Some(&2));
        assert_eq!(messages.get("results"), Some(&1));
    }

    /// Lines queued through the recorder's thread, across chunk
    /// boundaries and with results among them, hash, count and keep as
    /// when tallied one by one in place; a second take starts afresh.
    #[test]
    fn the_recording_thread_tallies_in_queued_order() {
        let result = |n: u32| {
            Bytes::from(format!(
                r#"{{"request_id":"r{n}","pc_id":"pc-{n}","exit_code":{n},"stdout":"","stderr":"","started_at":"2026-06-01T10:00:00Z","finished_at":"2026-06-01T10:00:01Z"}}"#
            ))
        };
        let entries = || {
            (0..3 * CHUNK as u32 + 7).map(move |n| match n % 3 {
                0 => Entry::Line {
                    at: u128::from(n),
                    line: format!("fault {n}"),
                },
                1 => Entry::Bus {
                    at: u128::from(n),
                    subject: format!("results.pc-{n}"),
                    payload: Some(result(n)),
                },
                _ => Entry::Bus {
                    at: u128::from(n),
                    subject: format!("heartbeat.pc-{n}"),
                    payload: None,
                },
            })
        };
        let recorder = Recorder::shared(true);
        for entry in entries() {
            lock(&recorder).queue(entry);
        }
        let (lines, messages, hash) = Recorder::take(&recorder).into_parts();
        let mut in_place = Tally {
            keep: true,
            ..Tally::default()
        };
        for entry in entries() {
            in_place.add(entry);
        }
        let (expected_lines, expected_messages, expected_hash) = in_place.into_parts();
        assert_eq!(lines.len(), 3 * CHUNK + 7);
        assert_eq!(lines, expected_lines);
        assert_eq!(messages, expected_messages);
        assert_eq!(hash, expected_hash);
        assert!(
            lines[1].ends_with(" r1 pc-1 exit 1 skipped false attempts 1"),
            "{}",
            lines[1]
        );
        let (lines, messages, _) = Recorder::take(&recorder).into_parts();
        assert!(lines.is_empty() && messages.is_empty());
        // Without a thread (one could not be started), the same trace.
        let in_place = Mutex::new(Recorder::in_place(true));
        for entry in entries() {
            lock(&in_place).queue(entry);
        }
        let (lines, messages, hash) = Recorder::take(&in_place).into_parts();
        assert_eq!(lines, expected_lines);
        assert_eq!(messages, expected_messages);
        assert_eq!(hash, expected_hash);
    }
}
