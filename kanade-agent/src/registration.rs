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
//! off still replays. An agent that first starts while the broker is
//! out of reach records the position when it first gets it, and also its
//! own first-start time: a command counts as older only if it is at or
//! before the position *and* was issued (`issued_at`) before the agent
//! first started — so commands sent while a new agent waited for the
//! broker still reach it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade_core::names::STREAM_EXEC;
use kanade_core::transport::TransportError;
use serde::{Deserialize, Serialize};

use crate::state::Inner;

/// The file, inside the state directory.
pub const REGISTRATION_FILE: &str = "registration.json";

/// The recorded position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// EXEC's last sequence when the agent first reached the broker:
    /// replayed commands at or before it may predate the agent.
    pub exec_sequence: u64,
    /// When the agent first started (its clock).
    #[serde(default)]
    pub first_started_at: Option<DateTime<Utc>>,
}

fn read(inner: &Inner, dir: &Path) -> Option<Registration> {
    let bytes = inner.files.read(&dir.join(REGISTRATION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The agent's registration: read from the state directory, or — on the
/// first start — taken from EXEC now (retried until the broker answers)
/// and written durably.
pub(crate) async fn ensure(inner: &Inner) -> Registration {
    let dir = &inner.settings.state_dir;
    if let Some(registration) = read(inner, dir) {
        return registration;
    }
    let first_started_at = Some(inner.started_at);
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
    let registration = Registration {
        exec_sequence,
        first_started_at,
    };
    let bytes = serde_json::to_vec(&registration).unwrap_or_default();
    match inner
        .files
        .write(&dir.join(REGISTRATION_FILE), &bytes, true)
    {
        Ok(()) => tracing::info!(
            exec_sequence,
            "first start: commands sent before now are not replayed here (unless kitting)"
        ),
        Err(e) => tracing::warn!("registration not saved (next start decides again): {e}"),
    }
    registration
}

/// What [`predates`] looks at in a command body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Provenance {
    /// The command opts in to agents newer than itself.
    #[serde(default)]
    pub kitting: bool,
    /// When the backend published it.
    #[serde(default)]
    pub issued_at: Option<DateTime<Utc>>,
}

impl Provenance {
    /// Reads them from a command body (defaults if it is not one).
    pub fn of(payload: &[u8]) -> Self {
        serde_json::from_slice(payload).unwrap_or_default()
    }
}

/// Whether a replayed command at `sequence` predates the agent (at or
/// before its position and issued before it first started), was not
/// addressed to it by name (`own_subject`) and does not opt in (pure).
pub fn predates(
    registration: Registration,
    sequence: u64,
    own_subject: bool,
    command: Provenance,
) -> bool {
    let issued_before = match (command.issued_at, registration.first_started_at) {
        (Some(issued), Some(started)) => issued < started,
        _ => true,
    };
    sequence <= registration.exec_sequence && issued_before && !own_subject && !command.kitting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_older_commands_without_kitting_are_skipped() {
        let started = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let r = Registration {
            exec_sequence: 10,
            first_started_at: Some(started),
        };
        let plain = Provenance::default();
        let kit = Provenance {
            kitting: true,
            issued_at: None,
        };
        assert!(predates(r, 3, false, plain));
        assert!(predates(r, 10, false, plain));
        assert!(!predates(r, 11, false, plain));
        assert!(!predates(r, 3, false, kit));
        assert!(!predates(r, 3, true, plain), "named by pc: always runs");
        let before = Provenance {
            kitting: false,
            issued_at: Some(started - chrono::Duration::seconds(1)),
        };
        let after = Provenance {
            kitting: false,
            issued_at: Some(started + chrono::Duration::seconds(1)),
        };
        assert!(predates(r, 3, false, before));
        assert!(
            !predates(r, 3, false, after),
            "sent while it waited for the broker"
        );
        assert!(Provenance::of(br#"{"kitting": true, "id": "x"}"#).kitting);
        assert_eq!(Provenance::of(b"not json"), Provenance::default());
    }
}
