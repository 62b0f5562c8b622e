//! # kanade-core
//!
//! The transport-agnostic core of kanade, a library-first SDK for
//! orchestrating fleets of endpoints:
//!
//! - [`wire`]: every JSON message on the backbone (commands, results,
//!   heartbeats, inventory, events, config, audit), compatible with the
//!   published kanade 0.101 wire format, with exported JSON Schemas.
//! - [`names`]: bucket, store, stream and subject names, and
//!   [`names::SubjectToken`], which keeps unsafe ids out of subjects.
//! - [`policy`]: the pure safety decisions (gates, retry, config layering,
//!   script verification, output overflow).
//! - [`transport`]: the transport contract (message log with durable
//!   streams and consumers, key-value buckets, object stores), the
//!   deterministic in-memory transport, the crash-safe multi-process file
//!   transport, the shared conformance suite and a
//!   fault-injection layer.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use kanade_core::policy::{evaluate_gates, exit_codes, Delivery, GateDecision, GateInputs, HostSupport};
//! use kanade_core::wire::Command;
//!
//! let command: Command = serde_json::from_str(r#"{
//!     "id": "echo-hi", "version": "1.0.0", "request_id": "r-1",
//!     "shell": "sh", "script": "echo hi", "timeout_secs": 30,
//!     "deadline_at": "2026-06-10T09:00:00Z"
//! }"#).unwrap();
//!
//! let host = HostSupport::everything();
//! let now = Utc.with_ymd_and_hms(2026, 6, 10, 9, 0, 1).unwrap();
//! let inputs = GateInputs {
//!     now,
//!     fleet_now: now,
//!     delivery: Delivery::Broker,
//!     last_fresh_at: None,
//!     script_current: Some("1.0.0"),
//!     script_status: Some("ACTIVE"),
//!     host: &host,
//! };
//! match evaluate_gates(&command, &inputs) {
//!     GateDecision::Stop(stop) => {
//!         assert_eq!(stop.exit_code, exit_codes::DEADLINE_PASSED);
//!         assert!(stop.skipped);
//!     }
//!     GateDecision::Run => unreachable!("the deadline passed a second ago"),
//! }
//! ```

pub mod names;
pub mod policy;
pub mod transport;
pub mod wire;
