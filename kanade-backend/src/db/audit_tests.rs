//! Tests of the audit store: a real chain over a temp SQLite, tampered with
//! through a second connection as `sqlite3` would.

#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use serde_json::json;

use super::*;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("audit.db")).unwrap();
    (dir, db)
}

/// What an operator with `sqlite3` would do.
fn tamper(dir: &tempfile::TempDir, sql: &str) {
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn draft(n: u32) -> AuditDraft {
    AuditDraft {
        id: None,
        at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, n).unwrap()
            + chrono::Duration::nanoseconds(i64::from(n) * 7),
        actor: if n.is_multiple_of(2) { "bob" } else { "alice" }.into(),
        source: AuditSource {
            ip: (n != 4).then(|| format!("10.0.0.{n}")),
            kind: "api".into(),
        },
        action: "exec".into(),
        target: (n != 5).then(|| format!("job-{n}")),
        outcome: "ok".into(),
        params: json!({"job": n, "all": true}),
        details: json!({"n": n, "note": "x", "ratio": 0.1 * f64::from(n)}),
    }
}

fn chain(db: &Db, n: u32) -> Vec<AuditEvent> {
    (1..=n)
        .map(|i| db.append_audit(draft(i)).unwrap())
        .collect()
}

fn broken(db: &Db) -> ChainBreak {
    db.verify_audit().unwrap().unwrap_err()
}

#[test]
fn a_real_chain_verifies_and_reads_back_as_appended() {
    let (_dir, db) = db();
    assert_eq!(
        db.verify_audit().unwrap().unwrap(),
        VerifyReport {
            entries: 0,
            last_hash: String::new()
        }
    );
    let appended = chain(&db, 5);
    assert_eq!(appended[0].seq, Some(1));
    assert_eq!(appended[0].prev_hash, "");
    assert_eq!(appended[1].prev_hash, appended[0].hash);
    assert_eq!(
        appended[2].params_sha256.as_deref(),
        Some(crate::audit::chain::params_sha256(&json!({"all": true, "job": 3})).as_str())
    );
    assert_eq!(db.audit_all().unwrap(), appended);
    assert_eq!(
        db.verify_audit().unwrap().unwrap(),
        VerifyReport {
            entries: 5,
            last_hash: appended[4].hash.clone()
        }
    );
    assert_eq!(crate::audit::verify(appended).unwrap().entries, 5);
}

#[test]
fn editing_any_column_breaks_the_chain_at_that_entry() {
    for (column, value) in [
        ("actor", "'mallory'"),
        ("at", "'2025-03-01T12:00:03.000000021+00:00'"), // same instant, other text: fine
        ("at", "'2025-03-01T12:00:04.000000021Z'"),
        ("id", "'forged'"),
        ("source_ip", "NULL"),
        ("source_kind", "'cli'"),
        ("action", "'kill'"),
        ("target", "'job-9'"),
        ("outcome", "'denied'"),
        ("params_sha256", "'00'"),
        ("details", "'{\"n\":3}'"),
        ("prev_hash", "'00'"),
        ("hash", "'00'"),
    ] {
        let (dir, db) = db();
        chain(&db, 5);
        tamper(
            &dir,
            &format!("UPDATE audit SET {column} = {value} WHERE seq = 3"),
        );
        let result = db.verify_audit().unwrap();
        if value.ends_with("+00:00'") {
            assert!(result.is_ok(), "{column} = {value}: {result:?}");
            continue;
        }
        let err = result.unwrap_err();
        assert_eq!(
            (err.seq, err.kind),
            (3, BreakKind::Changed),
            "{column} = {value}"
        );
    }
}

#[test]
fn the_published_flag_is_not_part_of_the_chain() {
    let (dir, db) = db();
    chain(&db, 3);
    tamper(&dir, "UPDATE audit SET published = 1 WHERE seq = 2");
    assert!(db.verify_audit().unwrap().is_ok());
}

#[test]
fn an_unreadable_row_is_named() {
    let (dir, db) = db();
    chain(&db, 5);
    tamper(&dir, "UPDATE audit SET details = 'not json' WHERE seq = 4");
    let err = broken(&db);
    assert_eq!((err.seq, err.kind), (4, BreakKind::Unreadable));
    assert!(db.audit_all().is_err());
}

#[test]
fn a_deleted_row_is_named_by_its_own_seq() {
    let (dir, db) = db();
    chain(&db, 5);
    tamper(&dir, "DELETE FROM audit WHERE seq = 2");
    let err = broken(&db);
    assert_eq!((err.seq, err.kind), (2, BreakKind::Missing));

    let (dir, db) = self::db();
    chain(&db, 5);
    tamper(&dir, "DELETE FROM audit WHERE seq = 1");
    assert_eq!(broken(&db).seq, 1);
}

#[test]
fn a_deleted_row_with_the_rest_renumbered_is_named() {
    let (dir, db) = db();
    chain(&db, 5);
    tamper(
        &dir,
        "DELETE FROM audit WHERE seq = 2; UPDATE audit SET seq = seq - 1 WHERE seq > 2",
    );
    // Entry 3, now numbered 2, hashed its old seq.
    let err = broken(&db);
    assert_eq!((err.seq, err.kind), (2, BreakKind::Changed));
}

#[test]
fn the_tail_removed_is_seen_only_against_a_pinned_hash() {
    let (dir, db) = db();
    let entries = chain(&db, 5);
    tamper(&dir, "DELETE FROM audit WHERE seq = 5");
    let report = db.verify_audit().unwrap().unwrap();
    assert_eq!(report.entries, 4);
    assert_ne!(report.last_hash, entries[4].hash);
}

#[test]
fn swapped_rows_are_named() {
    let (dir, db) = db();
    chain(&db, 5);
    tamper(
        &dir,
        "UPDATE audit SET seq = -1 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = -1;",
    );
    let err = broken(&db);
    assert_eq!((err.seq, err.kind), (2, BreakKind::Changed));
}

#[test]
fn the_same_id_twice_is_stored_once() {
    let (_dir, db) = db();
    chain(&db, 2);
    let mut retried = draft(3);
    retried.id = Some("req-42".into());
    let first = db.append_audit(retried.clone()).unwrap();
    retried.at += chrono::Duration::seconds(5);
    retried.outcome = "failed".into();
    let second = db.append_audit(retried).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.seq, Some(3));
    assert_eq!(db.audit_all().unwrap().len(), 3);
    assert_eq!(db.append_audit(draft(4)).unwrap().seq, Some(4));
    assert!(db.verify_audit().unwrap().is_ok());
}

#[test]
fn an_entry_appended_in_a_rolled_back_transaction_is_gone() {
    let (_dir, db) = db();
    chain(&db, 1);
    {
        let mut conn = db.lock();
        let tx = conn.transaction().unwrap();
        let entry = append_audit_in(&tx, draft(2)).unwrap();
        assert_eq!(entry.seq, Some(2));
        // Dropped: rolled back.
    }
    assert_eq!(db.audit_all().unwrap().len(), 1);
    assert_eq!(db.append_audit(draft(3)).unwrap().seq, Some(2));
    assert!(db.verify_audit().unwrap().is_ok());
}

#[test]
fn events_filter_by_time_and_actor_in_seq_order() {
    let (_dir, db) = db();
    let all = chain(&db, 6);
    let seqs = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>();
    assert_eq!(
        seqs(db.audit_events(None, None, 100).unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(seqs(db.audit_events(None, None, 2).unwrap()), [1, 2]);
    assert_eq!(
        seqs(db.audit_events(None, Some("bob"), 100).unwrap()),
        [2, 4, 6]
    );
    assert_eq!(
        seqs(db.audit_events(Some(all[2].at), None, 100).unwrap()),
        [3, 4, 5, 6]
    );
    assert_eq!(
        seqs(db.audit_events(Some(all[2].at), Some("alice"), 1).unwrap()),
        [3]
    );
    assert_eq!(seqs(db.audit_after(4, 100).unwrap()), [5, 6]);
}

#[test]
fn the_outbox_hands_out_unpublished_entries_in_order() {
    let (_dir, db) = db();
    let all = chain(&db, 3);
    let pending = |db: &Db| {
        db.audit_unpublished(10)
            .unwrap()
            .into_iter()
            .map(|(seq, e)| (seq, e.unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pending(&db),
        all.iter()
            .map(|e| (e.seq.unwrap(), e.clone()))
            .collect::<Vec<_>>()
    );
    db.mark_audit_published(1).unwrap();
    assert_eq!(pending(&db).first().map(|p| p.0), Some(2));
}
