//! One stream on disk: its segmented log, and the in-process index rebuilt
//! from it (payloads stay on disk and are read on delivery).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::disk::{Position, SegmentedLog};
use super::record::{Record, RecordKind};
use crate::transport::retention::{Retained, Retention};
use crate::transport::{
    Headers, Message, PublishAck, StreamConfig, StreamInfo, TransportError, MESSAGE_ID_HEADER,
};

/// How a stream definition is stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredStreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_msgs_per_subject: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub duplicate_window_ms: Option<u64>,
}

impl From<&StreamConfig> for StoredStreamConfig {
    fn from(c: &StreamConfig) -> Self {
        Self {
            name: c.name.clone(),
            subjects: c.subjects.clone(),
            max_msgs_per_subject: c.max_msgs_per_subject,
            max_bytes: c.max_bytes,
            max_age_ms: c.max_age.map(|d| d.as_millis() as u64),
            duplicate_window_ms: c.duplicate_window.map(|d| d.as_millis() as u64),
        }
    }
}

impl From<&StoredStreamConfig> for StreamConfig {
    fn from(c: &StoredStreamConfig) -> Self {
        Self {
            name: c.name.clone(),
            subjects: c.subjects.clone(),
            max_msgs_per_subject: c.max_msgs_per_subject,
            max_bytes: c.max_bytes,
            max_age: c.max_age_ms.map(Duration::from_millis),
            duplicate_window: c.duplicate_window_ms.map(Duration::from_millis),
        }
    }
}

/// Where a live message sits on disk.
#[derive(Debug, Clone)]
pub(super) struct IndexEntry {
    pub offset: u64,
    pub at_nanos: i64,
    pub subject: String,
    pub size: u64,
    pub encoded_len: u64,
}

impl Retained for IndexEntry {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// The live view of a stream, rebuilt by replaying its log.
pub(super) struct StreamIndex {
    pub config: StreamConfig,
    pub log: SegmentedLog,
    pub position: Position,
    pub retained: Retention<IndexEntry>,
    last_sequence: u64,
    last_at_nanos: i64,
    live_encoded: u64,
    dedup: HashMap<String, (u64, i64)>,
    /// Whether a locked read (which repairs a torn tail) has happened.
    recovered: bool,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl StreamIndex {
    pub(super) fn new(config: StreamConfig, dir: &Path) -> Self {
        Self {
            config,
            log: SegmentedLog {
                dir: dir.to_path_buf(),
            },
            position: Position::default(),
            retained: Retention::new(),
            last_sequence: 0,
            last_at_nanos: 0,
            live_encoded: 0,
            dedup: HashMap::new(),
            recovered: false,
        }
    }

    fn clear(&mut self) {
        let config = self.config.clone();
        let dir = self.log.dir.clone();
        let position = self.position;
        let recovered = self.recovered;
        *self = Self::new(config, &dir);
        self.position = position;
        self.recovered = recovered;
    }

    /// Catches up with the log on disk.
    pub(super) fn refresh(
        &mut self,
        locked: bool,
        warnings: &mut Vec<String>,
    ) -> Result<(), TransportError> {
        // Until a locked read has happened in this process, try to take the
        // writer lock (never wait for it: callers hold the index mutex) so a
        // torn tail is repaired and reported at once.
        if !locked && !self.recovered {
            if let Some(_lock) = super::disk::DirLock::try_acquire(&self.log.dir)? {
                return self.refresh(true, warnings);
            }
        }
        if locked {
            self.recovered = true;
        }
        let new = self.log.read_new(&mut self.position, locked, warnings)?;
        if new.reset {
            self.clear();
        }
        let end = new.scan.valid_end;
        let records = new.scan.records;
        for (i, (offset, record)) in records.iter().enumerate() {
            let next = records.get(i + 1).map_or(end, |(o, _)| *o);
            self.apply(*offset, next - offset, record);
        }
        Ok(())
    }

    fn apply(&mut self, offset: u64, encoded_len: u64, record: &Record) {
        self.last_sequence = self.last_sequence.max(record.sequence);
        self.last_at_nanos = self.last_at_nanos.max(record.at_nanos);
        match record.kind {
            RecordKind::Message => {
                self.expire(record.at_nanos);
                let size = (record.subject.len() + record.payload.len()) as u64;
                self.retained.insert(
                    record.sequence,
                    IndexEntry {
                        offset,
                        at_nanos: record.at_nanos,
                        subject: record.subject.clone(),
                        size,
                        encoded_len,
                    },
                );
                self.live_encoded += encoded_len;
                if let Some(id) = record.headers.get(MESSAGE_ID_HEADER) {
                    self.dedup
                        .insert(id.clone(), (record.sequence, record.at_nanos));
                }
                self.enforce_limits(&record.subject);
            }
            RecordKind::Tombstone => {
                if let Some(id) = record.headers.get(MESSAGE_ID_HEADER) {
                    self.dedup
                        .insert(id.clone(), (record.sequence, record.at_nanos));
                }
            }
            RecordKind::Meta | RecordKind::KvPut | RecordKind::KvDelete => {}
        }
    }

    fn enforce_limits(&mut self, subject: &str) {
        let dropped = self.retained.enforce(
            subject,
            self.config.max_msgs_per_subject,
            self.config.max_bytes,
        );
        self.forget(dropped);
    }

    /// Keeps the count of live encoded bytes (for compaction) in step.
    fn forget(&mut self, dropped: Vec<IndexEntry>) {
        for entry in dropped {
            self.live_encoded -= entry.encoded_len;
        }
    }

    /// Drops messages older than `max_age` and dedup ids older than the
    /// window, as of `now_nanos`.
    pub(super) fn expire(&mut self, now_nanos: i64) {
        if let Some(max_age) = self.config.max_age {
            let cutoff = now_nanos.saturating_sub(nanos(max_age));
            let dropped = self.retained.expire_oldest(|e| e.at_nanos < cutoff);
            self.forget(dropped);
        }
        if let Some(window) = self.config.duplicate_window {
            let cutoff = now_nanos.saturating_sub(nanos(window));
            self.dedup.retain(|_, (_, at)| *at >= cutoff);
        } else {
            self.dedup.clear();
        }
    }

    /// Appends a message (the caller holds the lock and has refreshed).
    pub(super) fn append(
        &mut self,
        message: &Message,
        now_nanos: i64,
    ) -> Result<PublishAck, TransportError> {
        let at_nanos = now_nanos.max(self.last_at_nanos);
        self.expire(at_nanos);
        if let (Some(id), Some(_)) = (
            message.headers.get(MESSAGE_ID_HEADER),
            self.config.duplicate_window,
        ) {
            if let Some((sequence, _)) = self.dedup.get(id) {
                return Ok(PublishAck {
                    stream: self.config.name.clone(),
                    sequence: *sequence,
                    duplicate: true,
                });
            }
        }
        let record = Record {
            kind: RecordKind::Message,
            sequence: self.last_sequence + 1,
            at_nanos,
            subject: message.subject.clone(),
            headers: (*message.headers).clone(),
            payload: message.payload.clone(),
        };
        let before = self.position.offset;
        let offsets = self
            .log
            .append(&mut self.position, std::slice::from_ref(&record), true)?;
        let encoded_len = self.position.offset - before;
        self.apply(offsets[0], encoded_len, &record);
        Ok(PublishAck {
            stream: self.config.name.clone(),
            sequence: record.sequence,
            duplicate: false,
        })
    }

    /// Rewrites the log without dead records once they dominate it (the
    /// caller holds the lock). Live messages and in-window dedup ids are kept.
    pub(super) fn compact_if_worthwhile(&mut self) -> Result<(), TransportError> {
        let size = self.position.offset;
        if size < 1024 * 1024 || size < 2 * self.live_encoded {
            return Ok(());
        }
        let live: std::collections::HashSet<u64> = self.retained.entries.keys().copied().collect();
        let mut records = vec![Record {
            kind: RecordKind::Meta,
            sequence: self.last_sequence,
            at_nanos: self.last_at_nanos,
            subject: String::new(),
            headers: Headers::new(),
            payload: Bytes::new(),
        }];
        for (id, (seq, at)) in &self.dedup {
            if !live.contains(seq) {
                records.push(Record {
                    kind: RecordKind::Tombstone,
                    sequence: *seq,
                    at_nanos: *at,
                    subject: String::new(),
                    headers: Headers::from([(MESSAGE_ID_HEADER.to_owned(), id.clone())]),
                    payload: Bytes::new(),
                });
            }
        }
        for (seq, entry) in &self.retained.entries {
            let record = self
                .log
                .read_at(self.position.generation, entry.offset)?
                .filter(|r| r.sequence == *seq)
                .ok_or_else(|| {
                    TransportError::Backend(
                        format!(
                            "stream {}: message {seq} unreadable during compaction",
                            self.config.name
                        )
                        .into(),
                    )
                })?;
            records.push(record);
        }
        let mut position = self.position;
        self.log.rewrite(&mut position, &records)?;
        // Rebuild from the new generation so offsets are right.
        self.position = Position {
            generation: position.generation,
            offset: 0,
        };
        self.clear();
        let mut ignored = Vec::new();
        self.refresh(true, &mut ignored)
    }

    /// Reads a live message's body from disk.
    pub(super) fn read(&self, seq: u64) -> Result<Option<Message>, TransportError> {
        let Some(entry) = self.retained.entries.get(&seq) else {
            return Ok(None);
        };
        Ok(self
            .log
            .read_at(self.position.generation, entry.offset)?
            .filter(|r| r.sequence == seq)
            .map(|r| Message {
                subject: r.subject,
                headers: r.headers.into(),
                payload: r.payload,
            }))
    }

    pub(super) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Sequences of the newest message of each subject, ascending.
    pub(super) fn last_per_subject(&self) -> Vec<u64> {
        self.retained.last_per_subject()
    }

    pub(super) fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            messages: self.retained.entries.len() as u64,
            bytes: self.retained.bytes(),
            first_sequence: self.retained.first_sequence(),
            last_sequence: self.last_sequence,
        }
    }
}
