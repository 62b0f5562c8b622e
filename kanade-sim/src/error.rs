//! [`SimError`]: why a simulation could not be set up or finished.

use std::path::PathBuf;

use kanade_agent::AgentError;
use kanade_backend::BackendError;
use kanade_core::names::InvalidToken;
use kanade_core::transport::TransportError;

/// A simulation could not be set up (or its fault driver died).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The tokio runtime could not be built.
    #[error("simulation: runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The state directory could not be created.
    #[error("simulation: state root {}: {source}", path.display())]
    StateRoot {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An agent name is not a valid subject token.
    #[error("simulation: pc id: {0}")]
    PcId(#[source] InvalidToken),
    /// An agent could not be built.
    #[error("simulation: agent {pc}: {source}")]
    Agent {
        /// The agent.
        pc: String,
        /// Why.
        #[source]
        source: AgentError,
    },
    /// The in-memory bus refused a setup step (`what`: the recorder's
    /// subscription, the agents' config bucket).
    #[error("simulation: {what}: {source}")]
    Transport {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The backend could not be opened or given the plan's jobs and
    /// schedule (`what`: `backend`, `job`, `schedule`).
    #[error("simulation: {what}: {source}")]
    Backend {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The task applying the fault schedule panicked or was cancelled.
    #[error("simulation: fault driver: {0}")]
    FaultDriver(#[source] tokio::task::JoinError),
}

impl SimError {
    pub(crate) fn transport(what: &'static str) -> impl FnOnce(TransportError) -> Self {
        move |source| SimError::Transport { what, source }
    }

    pub(crate) fn backend(what: &'static str) -> impl FnOnce(BackendError) -> Self {
        move |source| SimError::Backend { what, source }
    }
}
