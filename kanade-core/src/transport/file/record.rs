//! The checksummed record format shared by every log file.
//!
//! ```text
//! offset 0  2 bytes  magic "KR"
//!        2  1 byte   format version (1)
//!        3  1 byte   kind (see RecordKind)
//!        4  u32 LE   body length
//!        8  u32 LE   crc32 of the body
//!       12  body:    u64 LE sequence (stream seq / KV revision)
//!                    i64 LE written-at, unix nanoseconds
//!                    u16 LE + bytes  subject (stream, bus) or key (KV)
//!                    u32 LE + bytes  headers as JSON (empty for none)
//!                    u32 LE + bytes  payload / value
//! ```
//!
//! A record is valid only if it is complete and its checksum matches; a
//! crash mid-append leaves a torn tail that [`scan`] reports and never
//! returns as data.

use bytes::Bytes;

use crate::transport::Headers;

const MAGIC: &[u8; 2] = b"KR";
const RECORD_VERSION: u8 = 1;
/// Bytes before the body.
pub(super) const HEADER_LEN: usize = 12;
/// Largest body accepted when reading (guards against garbage lengths).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordKind {
    /// A stream or bus message.
    Message = 1,
    /// A compacted-away stream message kept for dedup only (no payload).
    Tombstone = 2,
    /// A KV put.
    KvPut = 3,
    /// A KV delete.
    KvDelete = 4,
    /// Segment header: `sequence` is the last sequence / revision so far.
    Meta = 5,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => RecordKind::Message,
            2 => RecordKind::Tombstone,
            3 => RecordKind::KvPut,
            4 => RecordKind::KvDelete,
            5 => RecordKind::Meta,
            _ => return None,
        })
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub kind: RecordKind,
    pub sequence: u64,
    pub at_nanos: i64,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
}

impl Record {
    /// Encodes the record with its header and checksum.
    pub(super) fn encode(&self) -> Vec<u8> {
        let headers = if self.headers.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.headers).unwrap_or_default()
        };
        let mut body =
            Vec::with_capacity(32 + self.subject.len() + headers.len() + self.payload.len());
        body.extend_from_slice(&self.sequence.to_le_bytes());
        body.extend_from_slice(&self.at_nanos.to_le_bytes());
        body.extend_from_slice(&(self.subject.len() as u16).to_le_bytes());
        body.extend_from_slice(self.subject.as_bytes());
        body.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        body.extend_from_slice(&headers);
        body.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.payload);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(RECORD_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode_body(kind: RecordKind, body: &[u8]) -> Option<Record> {
        let mut cursor = Cursor { data: body, at: 0 };
        let sequence = u64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
        let at_nanos = i64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
        let subject_len = u16::from_le_bytes(cursor.take(2)?.try_into().ok()?) as usize;
        let subject = std::str::from_utf8(cursor.take(subject_len)?)
            .ok()?
            .to_owned();
        let headers_len = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?) as usize;
        let headers_bytes = cursor.take(headers_len)?;
        let headers = if headers_bytes.is_empty() {
            Headers::new()
        } else {
            serde_json::from_slice(headers_bytes).ok()?
        };
        let payload_len = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?) as usize;
        let payload = Bytes::copy_from_slice(cursor.take(payload_len)?);
        (cursor.at == body.len()).then_some(Record {
            kind,
            sequence,
            at_nanos,
            subject,
            headers,
            payload,
        })
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
}

/// Why scanning stopped before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    /// The data ends inside a record (a torn append): safe to truncate.
    TornTail {
        /// Where the torn record starts.
        offset: u64,
        /// Bytes from there to the end.
        len: u64,
    },
    /// A complete record fails its checksum or does not decode.
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// Whether nothing follows it (then it is a torn tail too).
        at_end: bool,
    },
}

/// The outcome of scanning a byte range of a log.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Valid records with their offsets (relative to the scan's base).
    pub records: Vec<(u64, Record)>,
    /// Offset just past the last valid record.
    pub valid_end: u64,
    /// Why scanning stopped early, if it did.
    pub damage: Option<Damage>,
}

/// Decodes consecutive records from `data`, whose first byte sits at `base`.
pub(super) fn scan(data: &[u8], base: u64) -> Scan {
    let mut out = Scan {
        valid_end: base,
        ..Scan::default()
    };
    let mut at = 0usize;
    while at < data.len() {
        let offset = base + at as u64;
        let rest = &data[at..];
        if rest.len() < HEADER_LEN {
            out.damage = Some(Damage::TornTail {
                offset,
                len: rest.len() as u64,
            });
            break;
        }
        let body_len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let kind = RecordKind::from_byte(rest[3]);
        if &rest[..2] != MAGIC || rest[2] != RECORD_VERSION || kind.is_none() || body_len > MAX_BODY
        {
            out.damage = Some(Damage::Corrupt {
                offset,
                at_end: false,
            });
            break;
        }
        if rest.len() < HEADER_LEN + body_len {
            out.damage = Some(Damage::TornTail {
                offset,
                len: rest.len() as u64,
            });
            break;
        }
        let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let body = &rest[HEADER_LEN..HEADER_LEN + body_len];
        let decoded = kind
            .filter(|_| crc32fast::hash(body) == crc)
            .and_then(|kind| Record::decode_body(kind, body));
        let Some(record) = decoded else {
            out.damage = Some(Damage::Corrupt {
                offset,
                at_end: rest.len() == HEADER_LEN + body_len,
            });
            break;
        };
        out.records.push((offset, record));
        at += HEADER_LEN + body_len;
        out.valid_end = base + at as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> Record {
        Record {
            kind: RecordKind::Message,
            sequence: seq,
            at_nanos: 1_700_000_000_000_000_000,
            subject: "results.r1".into(),
            headers: Headers::from([("Nats-Msg-Id".into(), format!("id-{seq}"))]),
            payload: Bytes::from(format!("payload {seq}")),
        }
    }

    #[test]
    fn records_round_trip() {
        let mut data = record(1).encode();
        data.extend(record(2).encode());
        let scan = scan(&data, 100);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.records[1].1, record(2));
        assert_eq!(scan.records[0].0, 100);
        assert_eq!(scan.valid_end, 100 + data.len() as u64);
        assert_eq!(scan.damage, None);
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let first = record(1).encode();
        let second = record(2).encode();
        for cut in 1..second.len() {
            let mut data = first.clone();
            data.extend_from_slice(&second[..cut]);
            let scan = scan(&data, 0);
            assert_eq!(scan.records.len(), 1, "cut at {cut}");
            assert_eq!(
                scan.damage,
                Some(Damage::TornTail {
                    offset: first.len() as u64,
                    len: cut as u64
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let mut data = record(1).encode();
        let last = data.len() - 1;
        data[last] ^= 1;
        let scan = scan(&data, 0);
        assert!(scan.records.is_empty());
        assert_eq!(
            scan.damage,
            Some(Damage::Corrupt {
                offset: 0,
                at_end: true
            })
        );
    }
}
