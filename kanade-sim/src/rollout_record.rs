//! [`RolloutRecord`]: a rollout as a simulation left it (a leaf the
//! outcome holds and the rollout checks read).

use kanade_backend::db::{RolloutRow, RolloutTargetRow};

/// A rollout as the simulation left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    /// Its row (state, reason, halt time, budget counts).
    pub row: RolloutRow,
    /// Its targets.
    pub targets: Vec<RolloutTargetRow>,
}

impl RolloutRecord {
    /// Targets whose run failed (counted against the budget).
    pub fn failed(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.outcome.as_deref() == Some("failed"))
            .count()
    }

    /// Targets whose command went out.
    pub fn dispatched(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.dispatched_at.is_some())
            .count()
    }
}
