//! The bus: every publish is appended here (without fsync: plain
//! subscriptions are ephemeral) so that plain subscribers in any process
//! see it. Segments `seg-<n>.log` rotate at [`SEGMENT_BYTES`]; the two
//! newest are kept. One tail task per process reads new records and fans
//! them out to that process's subscribers.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use super::disk::{io_error, DirLock};
use super::record::{scan, Record, RecordKind};
use super::{lock, now_nanos, POLL_INTERVAL};
use crate::transport::messages::ChannelSubscription;
use crate::transport::subject::matches;
use crate::transport::{Message, Subscription, TransportResult};

/// Size at which the bus starts a new segment.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// A position in the bus: (segment, offset).
type BusPosition = (u64, u64);

pub(super) struct Bus {
    dir: PathBuf,
    state: Mutex<BusState>,
    appended: Notify,
}

struct BusState {
    subscribers: Vec<BusSubscriber>,
    position: BusPosition,
    tail_running: bool,
}

struct BusSubscriber {
    pattern: String,
    from: BusPosition,
    tx: mpsc::UnboundedSender<Message>,
}

fn segments(dir: &Path) -> TransportResult<Vec<u64>> {
    let mut found: Vec<u64> = fs::read_dir(dir)
        .map_err(io_error("listing", dir))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n}.log"))
}

impl Bus {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            state: Mutex::new(BusState {
                subscribers: Vec::new(),
                position: (0, 0),
                tail_running: false,
            }),
            appended: Notify::new(),
        }
    }

    /// The end of the bus right now.
    fn end(&self) -> TransportResult<BusPosition> {
        let newest = segments(&self.dir)?.last().copied().unwrap_or(0);
        let len = fs::metadata(segment_path(&self.dir, newest)).map_or(0, |m| m.len());
        Ok((newest, len))
    }

    /// Appends a message (blocking).
    pub(super) fn append(&self, message: &Message) -> TransportResult<()> {
        let record = Record {
            kind: RecordKind::Message,
            sequence: 0,
            at_nanos: now_nanos(),
            subject: message.subject.clone(),
            headers: (*message.headers).clone(),
            payload: message.payload.clone(),
        }
        .encode();
        {
            let _lock = DirLock::acquire(&self.dir)?;
            let existing = segments(&self.dir)?;
            let mut newest = existing.last().copied().unwrap_or(0);
            let path = segment_path(&self.dir, newest);
            if fs::metadata(&path).is_ok_and(|m| m.len() >= SEGMENT_BYTES) {
                newest += 1;
                for old in existing.iter().filter(|n| **n + 1 < newest) {
                    let _ = fs::remove_file(segment_path(&self.dir, *old));
                }
            }
            let path = segment_path(&self.dir, newest);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error("opening", &path))?;
            file.write_all(&record)
                .map_err(io_error("appending to", &path))?;
        }
        self.appended.notify_waiters();
        Ok(())
    }

    /// Subscribes (blocking part): registers the subscriber from the current
    /// end and makes sure the tail task runs.
    pub(super) fn subscribe(self: &Arc<Self>, pattern: String) -> TransportResult<Subscription> {
        let from = self.end()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let start_tail = {
            let mut state = lock(&self.state);
            if !state.tail_running {
                state.position = from;
            }
            state.subscribers.push(BusSubscriber { pattern, from, tx });
            !std::mem::replace(&mut state.tail_running, true)
        };
        if start_tail {
            let bus = self.clone();
            tokio::runtime::Handle::current().spawn(async move { bus.tail().await });
        }
        Ok(Box::new(ChannelSubscription(rx)))
    }

    async fn tail(self: Arc<Self>) {
        loop {
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let bus = self.clone();
            let read = tokio::task::spawn_blocking(move || bus.read_new()).await;
            let records = match read {
                Ok(Ok(records)) => records,
                Ok(Err(e)) => {
                    tracing::warn!("file transport bus: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            {
                let mut state = lock(&self.state);
                for (position, message) in records {
                    state.subscribers.retain(|s| {
                        position < s.from
                            || !matches(&s.pattern, &message.subject)
                            || s.tx.send(message.clone()).is_ok()
                    });
                }
                state.subscribers.retain(|s| !s.tx.is_closed());
                if state.subscribers.is_empty() {
                    state.tail_running = false;
                    return;
                }
            }
            tokio::select! {
                biased;
                _ = appended => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Reads everything after the tail position, following rotation.
    fn read_new(&self) -> TransportResult<Vec<(BusPosition, Message)>> {
        let mut position = lock(&self.state).position;
        let mut out = Vec::new();
        let existing = segments(&self.dir)?;
        if let Some(oldest) = existing.first() {
            if position.0 < *oldest {
                position = (*oldest, 0);
            }
        }
        loop {
            // Once a newer segment exists this one is final: read it to the
            // end and move on; otherwise read what is there and stop.
            let next_exists = segment_path(&self.dir, position.0 + 1).exists()
                || existing.iter().any(|n| *n > position.0);
            let path = segment_path(&self.dir, position.0);
            let mut data = Vec::new();
            if let Ok(mut file) = File::open(&path) {
                file.seek(SeekFrom::Start(position.1))
                    .map_err(io_error("seeking", &path))?;
                file.read_to_end(&mut data)
                    .map_err(io_error("reading", &path))?;
            }
            let scanned = scan(&data, position.1);
            for (offset, record) in scanned.records {
                out.push((
                    (position.0, offset),
                    Message {
                        subject: record.subject,
                        headers: record.headers.into(),
                        payload: record.payload,
                    },
                ));
            }
            position.1 = scanned.valid_end;
            if !next_exists {
                break;
            }
            position = (position.0 + 1, 0);
        }
        lock(&self.state).position = position;
        Ok(out)
    }
}
