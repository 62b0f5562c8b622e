//! When this agent joined the fleet, as a position in the EXEC stream.
//!
//! EXEC keeps the newest command per subject so an agent that was off
//! catches up — but a brand-new agent would replay the last fleet-wide
//! command sent before it existed (think "reboot all"). So on its first
//! start the agent records EXEC's last sequence in
//! `<state_dir>/registration.json`; replayed fleet-wide and group commands
//! at or before it are acknowledged and skipped (no result: the agent was
//! not a target when they went out) unless the command opts in with
//! `kitting: true`. A command on the agent's own subject
//! (`commands.pc.<pc>`) named it explicitly and always runs. Later
//! starts keep the recorded position, so what was sent while the agent was
//! off still replays. Positions come from the broker, so no clock is
//! involved.

use std::path::Path;
use std::time::Duration;

use kanade_core::names::STREAM_EXEC;
use kanade_core::transport::TransportError;
use serde::{Deserialize, Serialize};

use crate::state::Inner;

/// The file, inside the state directory.
pub const REGISTRATION_FILE: &str = "registration.json";

/// The recorded position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// EXEC's last sequence when the agent first started: replayed
    /// commands at or before it predate the agent.
    pub exec_sequence: u64,
}

fn read(dir: &Path) -> Option<Registration> {
    let bytes = std::fs::read(dir.join(REGISTRATION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The agent's registration: read from the state directory, or — on the
/// first start — taken from EXEC now (retried until the broker answers)
/// and written durably.
pub(crate) async fn ensure(inner: &Inner) -> Registration {
    let dir = &inner.settings.state_dir;
    if let Some(registration) = read(dir) {
        return registration;
    }
    // An agent that has run commands before (its ledger remembers some) is
    // not new — an upgrade from a version without this file: everything
    // still in EXEC is for it.
    let exec_sequence = if !inner.ledger.is_empty() {
        0
    } else {
        loop {
            match inner.log.stream_info(STREAM_EXEC).await {
                Ok(info) => break info.last_sequence,
                // Nothing to replay, nothing that predates us.
                Err(TransportError::NotFound { .. }) => break 0,
                Err(e) => {
                    tracing::debug!("EXEC position not read yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    };
    let registration = Registration { exec_sequence };
    let bytes = serde_json::to_vec(&registration).unwrap_or_default();
    match crate::outbox::write_durably(&dir.join(REGISTRATION_FILE), &bytes) {
        Ok(()) => tracing::info!(
            exec_sequence,
            "first start: commands sent before now are not replayed here (unless kitting)"
        ),
        Err(e) => tracing::warn!("registration not saved (next start decides again): {e}"),
    }
    registration
}

/// Whether a replayed command at `sequence` predates the agent, was not
/// addressed to it by name (`own_subject`) and does not opt in (pure).
pub fn predates(
    registration: Registration,
    sequence: u64,
    own_subject: bool,
    kitting: bool,
) -> bool {
    sequence <= registration.exec_sequence && !own_subject && !kitting
}

/// Whether a command body says `kitting: true`.
pub(crate) fn is_kitting(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default)]
        kitting: bool,
    }
    serde_json::from_slice::<Flag>(payload).is_ok_and(|f| f.kitting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_older_commands_without_kitting_are_skipped() {
        let r = Registration { exec_sequence: 10 };
        assert!(predates(r, 3, false, false));
        assert!(predates(r, 10, false, false));
        assert!(!predates(r, 11, false, false));
        assert!(!predates(r, 3, false, true));
        assert!(!predates(r, 3, true, false), "named by pc: always runs");
        assert!(is_kitting(br#"{"kitting": true, "id": "x"}"#));
        assert!(!is_kitting(br#"{"id": "x"}"#));
        assert!(!is_kitting(b"not json"));
    }
}
