//! # kanade-agent
//!
//! The agent that runs on every endpoint, as a library a Rust service can
//! embed (and the `kanade-agent` binary built on it). It receives commands
//! from `commands.all`, its groups and its pc subject (and replays the EXEC
//! stream through its own durable consumer), admits each request once
//! through an on-disk ledger, runs the safety gates, waits out jitter and a
//! concurrency slot, runs the gates again, resolves and verifies the script,
//! runs it with retry, and publishes exactly one result through an on-disk
//! outbox — a result is never lost across restarts or network drops.
//!
//! ```
//! use std::sync::Arc;
//! use kanade_agent::{Agent, AgentSettings};
//! use kanade_core::names::SubjectToken;
//! use kanade_core::transport::memory::MemoryTransport;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let state = tempfile::tempdir().unwrap();
//! let settings = AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), state.path());
//! let agent = Agent::builder(settings, Arc::new(MemoryTransport::new())).build().unwrap();
//! // Run until the shutdown future resolves (here: at once).
//! agent.run(async {}).await.unwrap();
//! # });
//! ```

mod admission;
mod agent;
mod agent_schedules;
mod builder;
mod clock;
mod fire;
mod follow;
mod heartbeat;
mod intake;
mod kills;
mod ledger;
mod limiter;
pub mod metrics;
mod orphans;
mod outbox;
mod presence;
mod registration;
mod report;
mod runner;
mod script;
pub mod scripted;
mod settings;
mod state;
pub mod state_files;
pub mod trust;
pub mod update;

pub use agent::{Agent, Stopped, SHUTDOWN_GRACE};
pub use builder::AgentBuilder;
pub use clock::{Clock, SystemClock, TokioClock};
pub use intake::{REPLAY_ACK_WAIT, REPLY_TO_HEADER};
pub use ledger::{Admission, Ledger, NewEntry, Stage};
pub use limiter::Limiter;
pub use outbox::{Outbox, OutboxEntry};
pub use presence::{collect_hw_inventory, parse_emitted_events, process_status_kib};
pub use runner::{
    command_line, find_on_path, kill_requested, CappedCapture, KillSignal, ProcessRunner, RunEnd,
    RunOutput, RunSpec, ScriptRunner,
};
pub use settings::{AgentSettings, FileConfig, TrustFileConfig};

/// Exit code reported when a command could not be started or its script
/// could not be resolved (bad digest, body too large, not UTF-8, missing
/// object); stderr says which. Not one of the reserved codes: a failure.
pub const SCRIPT_FAILURE_EXIT: i32 = 1;

/// Why the agent could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: std::path::PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] kanade_core::transport::TransportError),
    /// A setting is invalid.
    #[error("invalid setting {setting}: {reason}")]
    Config {
        /// Which setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent's config file does not parse, or sets a key that does not
    /// exist (see [`FileConfig::parse`]).
    #[error("invalid config file: {reason}")]
    ConfigFile {
        /// The parser's message (it names the line and the key).
        reason: String,
    },
    /// A record could not be encoded as JSON (should not happen).
    #[error("internal error: encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The failure.
        #[source]
        source: serde_json::Error,
    },
}

impl AgentError {
    pub(crate) fn encode(what: &'static str, source: serde_json::Error) -> Self {
        AgentError::Encode { what, source }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AgentError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
