//! The JetStream streams kanade provisions, with their limits.

use std::time::Duration;

use super::subjects;
use super::*;

const DAY: u64 = 24 * 60 * 60;
const MIB: u64 = 1024 * 1024;

/// How a stream is provisioned: name, subjects and retention limits
/// (discard old, file storage on durable transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name.
    pub name: &'static str,
    /// Subject filters it captures.
    pub subjects: &'static [&'static str],
    /// Oldest message kept.
    pub max_age: Duration,
    /// Total size kept, in bytes.
    pub max_bytes: u64,
    /// Messages kept per subject (`None` for unlimited).
    pub max_msgs_per_subject: Option<u64>,
}

impl StreamSpec {
    /// EXEC: `commands.>`, 7 days, 64 MiB, one message per subject.
    pub const EXEC: StreamSpec = StreamSpec {
        name: STREAM_EXEC,
        subjects: &[subjects::COMMANDS_FILTER],
        max_age: Duration::from_secs(7 * DAY),
        max_bytes: 64 * MIB,
        max_msgs_per_subject: Some(1),
    };
    /// RESULTS: `results.>`, 30 days, 2 GiB.
    pub const RESULTS: StreamSpec = StreamSpec {
        name: STREAM_RESULTS,
        subjects: &[subjects::RESULTS_FILTER],
        max_age: Duration::from_secs(30 * DAY),
        max_bytes: 2048 * MIB,
        max_msgs_per_subject: None,
    };
    /// EVENTS: `events.>`, 7 days, 256 MiB.
    pub const EVENTS: StreamSpec = StreamSpec {
        name: STREAM_EVENTS,
        subjects: &[subjects::EVENTS_FILTER],
        max_age: Duration::from_secs(7 * DAY),
        max_bytes: 256 * MIB,
        max_msgs_per_subject: None,
    };
    /// AUDIT: `audit.>`, 90 days, 512 MiB.
    pub const AUDIT: StreamSpec = StreamSpec {
        name: STREAM_AUDIT,
        subjects: &[subjects::AUDIT_FILTER],
        max_age: Duration::from_secs(90 * DAY),
        max_bytes: 512 * MIB,
        max_msgs_per_subject: None,
    };
    /// OBS_EVENTS: `obs.>`, 90 days, 512 MiB.
    pub const OBS_EVENTS: StreamSpec = StreamSpec {
        name: STREAM_OBS_EVENTS,
        subjects: &[subjects::OBS_FILTER],
        max_age: Duration::from_secs(90 * DAY),
        max_bytes: 512 * MIB,
        max_msgs_per_subject: None,
    };
    /// INVENTORY: `inventory.>`, 90 days, 1 GiB.
    pub const INVENTORY: StreamSpec = StreamSpec {
        name: STREAM_INVENTORY,
        subjects: &[subjects::INVENTORY_FILTER],
        max_age: Duration::from_secs(90 * DAY),
        max_bytes: 1024 * MIB,
        max_msgs_per_subject: None,
    };
}

/// Every stream kanade provisions.
pub const ALL_STREAMS: [StreamSpec; 6] = [
    StreamSpec::EXEC,
    StreamSpec::RESULTS,
    StreamSpec::EVENTS,
    StreamSpec::AUDIT,
    StreamSpec::OBS_EVENTS,
    StreamSpec::INVENTORY,
];

/// The bytes kanade's streams reserve together on a JetStream server: the
/// sum of every stream's `max_bytes` (4,416 MiB). JetStream counts a
/// stream's `max_bytes` against the server's storage limit
/// (`max_file_store`) when the stream is created, whether or not it is
/// ever filled, so a server needs at least this much configured.
pub const RESERVED_STREAM_BYTES: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < ALL_STREAMS.len() {
        total += ALL_STREAMS[i].max_bytes;
        i += 1;
    }
    total
};
