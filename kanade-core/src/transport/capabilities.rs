//! [`Capabilities`]: what a transport can do, flat and comparable.

use std::time::Duration;

/// What a transport supports. The conformance suite skips a check only when
/// a capability here says the behaviour is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Short name (`memory`, `file`, `nats`).
    pub name: &'static str,
    /// Acknowledged data survives a restart of the process (or broker).
    pub durable: bool,
    /// Several processes can share it.
    pub cross_process: bool,
    /// Largest message payload, in bytes.
    pub max_payload_bytes: usize,
    /// Longest dedup window a stream may ask for (`None`: no dedup).
    pub dedup_window: Option<Duration>,
    /// Most history entries a KV key keeps.
    pub kv_max_history: usize,
    /// Whether KV buckets honour a TTL.
    pub kv_ttl: bool,
    /// Largest object, in bytes (`None`: no limit but memory or disk).
    pub max_object_bytes: Option<u64>,
    /// All timing runs on tokio time, so paused-time tests are deterministic.
    pub deterministic_time: bool,
}
