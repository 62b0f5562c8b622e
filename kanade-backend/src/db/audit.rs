//! The audit trail's table (DESIGN §10): entries appended as a hash chain,
//! read back for listing, export and verification, and published from the
//! same table as an outbox. The chain rules live in [`crate::audit::chain`].
//!
//! Every column but `published` is covered by the entry's hash, and
//! verification recomputes it from the columns: editing any of them with
//! `sqlite3` (or deleting or renumbering rows) is detected.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use kanade_core::wire::{AuditEvent, AuditSource};
use rusqlite::{params, OptionalExtension, Row};

use super::core::{Db, DbError};
use crate::audit::chain::{canonical_json, entry_hash, params_sha256, settle};
use crate::audit::{AuditDraft, BreakKind, ChainBreak, Verifier, VerifyReport};

/// Rows read per lock while exporting or verifying.
const PAGE: usize = 500;

const COLUMNS: &str = "seq, id, at, actor, source_ip, source_kind, action, target, outcome, \
                       params_sha256, details, prev_hash, hash";

/// How `at` is stored: fixed width (nanoseconds, `Z`), so text order is time order.
fn stored_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// An unpublished entry's seq and the entry (or why its row is unreadable).
pub(crate) type UnpublishedAudit = (u64, Result<AuditEvent, String>);

/// One row as stored, before its columns are interpreted.
struct RawRow {
    seq: i64,
    id: String,
    at: String,
    actor: String,
    source_ip: Option<String>,
    source_kind: String,
    action: String,
    target: Option<String>,
    outcome: String,
    params_sha256: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl RawRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            id: r.get(1)?,
            at: r.get(2)?,
            actor: r.get(3)?,
            source_ip: r.get(4)?,
            source_kind: r.get(5)?,
            action: r.get(6)?,
            target: r.get(7)?,
            outcome: r.get(8)?,
            params_sha256: r.get(9)?,
            details: r.get(10)?,
            prev_hash: r.get(11)?,
            hash: r.get(12)?,
        })
    }

    /// The row's seq (0 if negative, which no appended row is).
    fn seq(&self) -> u64 {
        u64::try_from(self.seq).unwrap_or(0)
    }

    /// The entry, or why its columns cannot be one.
    fn event(self) -> Result<AuditEvent, String> {
        let seq = u64::try_from(self.seq).map_err(|_| format!("seq {} is negative", self.seq))?;
        let at = DateTime::parse_from_rfc3339(&self.at)
            .map_err(|e| format!("at {:?}: {e}", self.at))?
            .with_timezone(&Utc);
        let details = serde_json::from_str(&self.details)
            .map_err(|e| format!("details are not JSON: {e}"))?;
        Ok(AuditEvent {
            id: self.id,
            seq: Some(seq),
            at,
            actor: self.actor,
            source: Some(AuditSource {
                ip: self.source_ip,
                kind: self.source_kind,
            }),
            action: self.action,
            target: self.target,
            outcome: Some(self.outcome),
            params_sha256: Some(self.params_sha256),
            details,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// A row's entry, an unreadable row as a SQLite conversion error.
fn event_or_error(row: RawRow) -> Result<AuditEvent, DbError> {
    row.event().map_err(|reason| {
        DbError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            reason.into(),
        ))
    })
}

fn existing(tx: &rusqlite::Connection, id: &str) -> Result<Option<RawRow>, DbError> {
    Ok(tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM audit WHERE id = ?1"))?
        .query_row([id], RawRow::read)
        .optional()?)
}

/// Appends `draft` to the chain inside `tx`, so a state change and its
/// audit entry commit (or roll back) together; returns the entry.
///
/// Assigns the next `seq`, links `prev_hash` to the last entry, computes
/// `params_sha256` and `hash`, and stores the row unpublished. A draft
/// whose `id` is already recorded stores nothing and returns the recorded
/// entry (a retried request is audited once). Details are stored as their
/// canonical JSON, floats settled (see [`crate::audit::chain::settle`]).
///
/// Call [`Db::notify_audit_appended`] after committing, to wake the
/// publisher ([`Db::append_audit`] does both).
pub fn append_audit_in(
    tx: &rusqlite::Transaction<'_>,
    draft: AuditDraft,
) -> Result<AuditEvent, DbError> {
    let id = draft.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Some(row) = existing(tx, &id)? {
        return event_or_error(row);
    }
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (last_seq, prev_hash) = last.unwrap_or((0, String::new()));
    let seq = u64::try_from(last_seq).unwrap_or(0) + 1;
    let mut entry = AuditEvent {
        id,
        seq: Some(seq),
        at: draft.at,
        actor: draft.actor,
        source: Some(draft.source),
        action: draft.action,
        target: draft.target,
        outcome: Some(draft.outcome),
        params_sha256: Some(params_sha256(&draft.params)),
        details: settle(draft.details),
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    let source = entry.source.clone().unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO audit (seq, id, at, actor, source_ip, source_kind, action, target, outcome,
            params_sha256, details, prev_hash, hash, published)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
    )?
    .execute(params![
        seq as i64,
        entry.id,
        stored_time(&entry.at),
        entry.actor,
        source.ip,
        source.kind,
        entry.action,
        entry.target,
        entry.outcome,
        entry.params_sha256,
        canonical_json(&entry.details),
        entry.prev_hash,
        entry.hash,
    ])?;
    Ok(entry)
}

impl Db {
    /// Appends `draft` to the audit chain in its own transaction and wakes
    /// the publisher; see [`append_audit_in`] (a known `id` stores nothing
    /// and returns the recorded entry).
    pub fn append_audit(&self, draft: AuditDraft) -> Result<AuditEvent, DbError> {
        let entry = {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let entry = append_audit_in(&tx, draft)?;
            tx.commit()?;
            entry
        };
        self.notify_audit_appended();
        Ok(entry)
    }

    /// Appends `audit` in `tx` when `changed` (the change it records
    /// happened), commits, and wakes the publisher when an entry was
    /// appended: the change and its entry commit together or not at all.
    pub(crate) fn commit_audited(
        &self,
        tx: rusqlite::Transaction<'_>,
        changed: bool,
        audit: Option<AuditDraft>,
    ) -> Result<(), DbError> {
        let appended = match (changed, audit) {
            (true, Some(draft)) => {
                append_audit_in(&tx, draft)?;
                true
            }
            _ => false,
        };
        tx.commit()?;
        if appended {
            self.notify_audit_appended();
        }
        Ok(())
    }

    /// Wakes the audit publisher: call after committing a transaction that
    /// used [`append_audit_in`].
    pub fn notify_audit_appended(&self) {
        self.audit_appended().notify_one();
    }

    /// The signal [`Db::notify_audit_appended`] raises.
    pub(crate) fn audit_signal(&self) -> Arc<tokio::sync::Notify> {
        self.audit_appended().clone()
    }

    /// Audit entries at or after `since` (when given) by `actor` (when
    /// given), oldest first: the first `limit` of them, in seq order.
    pub fn audit_events(
        &self,
        since: Option<DateTime<Utc>>,
        actor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, DbError> {
        self.audit_in_order(since, actor, limit, "ASC")
    }

    /// Like [`Db::audit_events`], but the newest `limit` entries, newest
    /// first.
    pub fn audit_newest(
        &self,
        since: Option<DateTime<Utc>>,
        actor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, DbError> {
        self.audit_in_order(since, actor, limit, "DESC")
    }

    fn audit_in_order(
        &self,
        since: Option<DateTime<Utc>>,
        actor: Option<&str>,
        limit: usize,
        order: &'static str,
    ) -> Result<Vec<AuditEvent>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR actor = ?2)
             ORDER BY seq {order} LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    since.as_ref().map(stored_time),
                    actor,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                RawRow::read,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(event_or_error).collect()
    }

    /// Up to `limit` audit entries with a seq above `after_seq`, in seq
    /// order: pages of an export (start with `after_seq` 0).
    pub fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, DbError> {
        self.raw_audit_after(after_seq, limit)?
            .into_iter()
            .map(event_or_error)
            .collect()
    }

    /// The whole audit trail, in seq order (for an export; see
    /// [`Db::audit_after`] to page through a large one).
    pub fn audit_all(&self) -> Result<Vec<AuditEvent>, DbError> {
        self.audit_after(0, usize::MAX)
    }

    fn raw_audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<RawRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    i64::try_from(after_seq).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                RawRow::read,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Recomputes the audit chain from the stored columns: `Ok(Ok(report))`
    /// when intact, `Ok(Err(break))` naming the first entry that was
    /// changed, removed or reordered (see [`crate::audit::verify`]; a
    /// deleted row is named by its own, now missing, seq), `Err` when the
    /// database cannot be read. A row whose columns no longer parse is a
    /// [`BreakKind::Unreadable`] break.
    pub fn verify_audit(&self) -> Result<Result<VerifyReport, ChainBreak>, DbError> {
        let mut verifier = Verifier::new();
        let mut after = 0;
        loop {
            let page = self.raw_audit_after(after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(Ok(verifier.finish()));
            };
            after = last.seq();
            for row in page {
                let seq = row.seq();
                let entry = match row.event() {
                    Ok(entry) => entry,
                    Err(reason) => {
                        return Ok(Err(ChainBreak {
                            seq,
                            kind: BreakKind::Unreadable,
                            reason: format!("entry {seq} cannot be read back: {reason}"),
                        }))
                    }
                };
                if let Err(chain_break) = verifier.push(&entry) {
                    return Ok(Err(chain_break));
                }
            }
        }
    }

    /// Up to `limit` entries not yet published, oldest first, each with its
    /// seq (an unreadable row as the reason).
    pub(crate) fn audit_unpublished(&self, limit: usize) -> Result<Vec<UnpublishedAudit>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit WHERE published = 0 ORDER BY seq LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], RawRow::read)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(|r| (r.seq(), r.event())).collect())
    }

    /// Marks entry `seq` as published.
    pub(crate) fn mark_audit_published(&self, seq: u64) -> Result<(), DbError> {
        self.lock()
            .prepare_cached("UPDATE audit SET published = 1 WHERE seq = ?1")?
            .execute([i64::try_from(seq).unwrap_or(i64::MAX)])?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
