//! [`PendingAudit`]: the audit entry of an API call in progress, handed by
//! the HTTP guard to the handler, so a handler whose change is a SQLite
//! transaction (an approval vote, a token) appends the entry in that same
//! transaction. The guard records the entry itself only when the handler
//! did not (a refusal, a failure, a change outside SQLite).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::draft::AuditDraft;

/// An API call's audit entry, not yet recorded. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PendingAudit {
    draft: AuditDraft,
    recorded: Arc<AtomicBool>,
}

impl PendingAudit {
    /// Wraps the guard's draft of the call (actor, source, action, target,
    /// parameters; the outcome is set when it is taken).
    pub fn new(draft: AuditDraft) -> Self {
        Self {
            draft,
            recorded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The entry with `outcome`, for the handler's transaction. Call
    /// [`PendingAudit::mark_recorded`] once that transaction committed.
    pub fn draft(&self, outcome: &str) -> AuditDraft {
        let mut draft = self.draft.clone();
        outcome.clone_into(&mut draft.outcome);
        draft
    }

    /// The handler appended the entry (its transaction committed).
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::SeqCst);
    }

    /// Whether the handler appended the entry.
    pub fn recorded(&self) -> bool {
        self.recorded.load(Ordering::SeqCst)
    }
}
