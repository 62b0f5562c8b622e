//! The audit trail (DESIGN §10): append-only, tamper-evident, published.
//!
//! Every state-changing call and every refusal becomes an
//! [`AuditEvent`](kanade_core::wire::AuditEvent): callers describe it as an
//! [`AuditDraft`] and append it with [`Db::append_audit`](crate::db::Db::append_audit)
//! (or, inside a `db` transaction that changes state, with
//! [`append_audit_in`](crate::db::append_audit_in), so the change and its
//! entry commit together). The store assigns `seq`, links `prev_hash`,
//! computes `params_sha256` and `hash` ([`chain`]), and records an `id` only
//! once, so a retried request is audited once.
//!
//! The `audit` table is also an outbox: each row starts unpublished, and the
//! [`AuditPublisher`] (started by [`Backend::run`](crate::Backend::run))
//! publishes rows in seq order on `audit.<actor>.<action>` with the entry's
//! hash as message id, marking each once the broker has it. A broker outage
//! loses nothing; the publisher sleeps until an entry is appended.
//!
//! [`Db::verify_audit`](crate::db::Db::verify_audit) and [`verify`] recompute
//! the chain and name the first entry that was changed, removed or reordered.

pub mod chain;
mod draft;
mod pending;
mod publisher;

pub use self::chain::{verify, BreakKind, ChainBreak, Verifier, VerifyReport};
pub use self::draft::{
    AuditDraft, OUTCOME_DENIED, OUTCOME_FAILED, OUTCOME_OK, OUTCOME_PENDING,
    OUTCOME_UNAUTHENTICATED,
};
pub use self::pending::PendingAudit;
pub use self::publisher::{subject_for, AuditPublisher};
