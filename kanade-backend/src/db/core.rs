//! [`Db`], the shared connection, and [`DbError`]. The leaf every other
//! `db` module builds on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::migrations::migrations;
use super::write_behind::{QueuedWrite, WriteBehind};

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The connection stayed in use for this long.
    #[error("the database stayed busy for {0:?}")]
    Busy(std::time::Duration),
    /// The database thread for queued writes
    /// ([`Db::with_write_behind`]) could not be started.
    #[error("database thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// Signalled when an audit entry is appended (wakes the publisher).
    audit_appended: Arc<tokio::sync::Notify>,
    /// Signalled when a result moves a rollout (wakes its driver).
    rollout_changed: Arc<tokio::sync::Notify>,
    /// Signalled when a check alert is queued (wakes its publisher).
    alerts_queued: Arc<tokio::sync::Notify>,
    /// Counts changes to executions (results, runs, statuses): a client
    /// waiting on one is woken by it (see [`Db::execution_changes`]).
    execution_changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Transactions rolled back on a journal-less ([`DbDurability::Simulated`])
    /// database (see [`Db::unjournaled_rollbacks`]).
    unjournaled_rollbacks: Arc<AtomicU64>,
    /// The database thread applying queued writes, when on (see
    /// [`Db::with_write_behind`]).
    write_behind: Option<Arc<WriteBehind>>,
}

/// How far a commit is pushed towards the disk before it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DbDurability {
    /// `synchronous = FULL` in WAL mode: a commit (and so a stored,
    /// acknowledged result) survives a power loss. The default.
    #[default]
    PowerLoss,
    /// The whole database in this process's memory (SQLite's `:memory:`;
    /// the path is not used): nothing reaches a file, and everything is
    /// gone when the [`Db`] is dropped. That suits a simulation, whose
    /// "crashes" are tasks stopping between database calls (which run
    /// inline) while its one backend lives as long as the run; never use
    /// it for a server.
    ///
    /// It also has no rollback journal once migrated (`journal_mode =
    /// OFF`): a `ROLLBACK` cannot undo what its transaction wrote (SQLite:
    /// it "behaves in an undefined way" in that mode), nor can a failed
    /// statement undo its own partial rows. Each rollback of a transaction
    /// that had written a row is counted ([`Db::unjournaled_rollbacks`])
    /// and a simulation reports any as a broken property, so a run that
    /// relied on one cannot pass unseen. Every write error in this crate
    /// ends its transaction (`?`), so a failed statement is counted as its
    /// transaction's rollback; code that caught a write error and then
    /// committed would not be, and must not be written for this store.
    Simulated,
}

impl Db {
    /// Opens (creating and migrating) the database at `path`, durable
    /// against power loss.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        Self::open_with(path, DbDurability::PowerLoss)
    }

    /// Opens (creating and migrating) the database at `path` with the
    /// given durability.
    pub fn open_with(path: &Path, durability: DbDurability) -> Result<Self, DbError> {
        let mut conn = match durability {
            DbDurability::PowerLoss => Connection::open(path)?,
            DbDurability::Simulated => Connection::open_in_memory()?,
        };
        match durability {
            DbDurability::PowerLoss => {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            DbDurability::Simulated => {
                // 64 KiB pages, SQLite's largest (set before the first
                // table): an in-memory database keeps every page in
                // SQLite's page cache, whose hash table a commit sweeps
                // whole after a b-tree balance that renumbered pages (they
                // are swapped through the lock-byte page's number). Fewer
                // pages make that sweep shorter: at 10,000 simulated agents
                // it was 8 % of the run on 4 KiB pages, 2.2 % on 16 KiB
                // and 0.2 % on 64 KiB. The journal is in memory while
                // migrating, and off after (below).
                conn.pragma_update(None, "page_size", 65536)?;
                conn.pragma_update(None, "journal_mode", "MEMORY")?;
                conn.pragma_update(None, "synchronous", "OFF")?;
            }
        }
        // 32 MiB of page cache: result rows of big fleets stay in memory.
        conn.pragma_update(None, "cache_size", -32768)?;
        // The hot statements (results, runs, heartbeats, counters) are
        // prepared once per connection, not per call: room for every
        // cached statement in this crate (63 now) with some to spare.
        conn.set_prepared_statement_cache_capacity(128);
        migrations().to_latest(&mut conn)?;
        let unjournaled_rollbacks = Arc::new(AtomicU64::new(0));
        if durability == DbDurability::Simulated {
            // Copying every page a transaction touches into the in-memory
            // journal was 7 % of a simulated fleet-day, for rollbacks that
            // a simulation's run never makes (migrations, which may, ran
            // journaled above). Any after a write is counted.
            conn.pragma_update(None, "journal_mode", "OFF")?;
            watch_rollbacks(&conn, unjournaled_rollbacks.clone());
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            audit_appended: Arc::new(tokio::sync::Notify::new()),
            rollout_changed: Arc::new(tokio::sync::Notify::new()),
            alerts_queued: Arc::new(tokio::sync::Notify::new()),
            execution_changes: Arc::new(tokio::sync::watch::channel(0).0),
            unjournaled_rollbacks,
            write_behind: None,
        })
    }

    /// The same store with a database thread of its own for writes whose
    /// caller needs no answer ([`Db::upsert_agents_behind`]): they are
    /// applied in the order they were queued while the caller goes on, and
    /// every other call first waits for the writes queued before it, so it
    /// sees the rows it would have seen had they run in place. The
    /// database's work keeps the order of the calls: a simulation on one
    /// thread stays deterministic and stores heartbeats on a second core.
    ///
    /// # Errors
    /// [`DbError::Thread`]: the thread could not be started.
    pub fn with_write_behind(mut self) -> Result<Self, DbError> {
        if self.write_behind.is_none() {
            let behind = WriteBehind::start().map_err(DbError::Thread)?;
            self.write_behind = Some(Arc::new(behind));
        }
        Ok(self)
    }

    /// Whether writes may be queued behind ([`Db::with_write_behind`]).
    pub fn writes_behind(&self) -> bool {
        self.write_behind.is_some()
    }

    /// Runs `write` on the database thread, behind every write queued
    /// before it, and returns at once; without one
    /// ([`Db::with_write_behind`]) runs it now. `write` reports its own
    /// failures.
    pub(super) fn queue_write(&self, write: QueuedWrite) {
        let write = match &self.write_behind {
            Some(behind) => match behind.queue(write) {
                Ok(()) => return,
                Err(write) => write,
            },
            None => write,
        };
        write();
    }

    /// Returns once every write queued before this call is applied ([`Db::with_write_behind`];
    /// at once without a database thread, or on it). Every call that reads
    /// or writes does this itself; a caller about to act on something
    /// beside the database in the order of the queue (a log line) may too.
    pub fn wait_for_queued_writes(&self) {
        if let Some(behind) = &self.write_behind {
            if !behind.on_its_thread() {
                behind.wait_until_applied();
            }
        }
    }

    /// How many transactions were rolled back on this database while it
    /// had no journal ([`DbDurability::Simulated`]; always 0 for a
    /// server's) after writing a row. Each may have left part of its
    /// writes behind. A transaction that only read and then ended without
    /// a commit is not counted: it has nothing to undo.
    pub fn unjournaled_rollbacks(&self) -> u64 {
        // Rollbacks in the writes queued before this call count.
        self.wait_for_queued_writes();
        self.unjournaled_rollbacks.load(Ordering::Relaxed)
    }

    /// The connection (a poisoned lock is taken over: every write is one
    /// transaction, so nothing half-done is left behind — on a simulated
    /// database, one that rolled back is counted instead, see
    /// [`DbDurability::Simulated`]), once the writes queued before this
    /// call are applied ([`Db::with_write_behind`]).
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.wait_for_queued_writes();
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection if nobody holds it now (writes still queued are not
    /// waited for: a probe needs no order).
    pub(super) fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Signalled when a check alert is queued (the alert publisher waits
    /// on it).
    pub fn alerts_queued(&self) -> &Arc<tokio::sync::Notify> {
        &self.alerts_queued
    }

    /// Signalled when a result moves a rollout (the rollout driver waits
    /// on it).
    pub fn rollout_changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.rollout_changed
    }

    /// A receiver that sees every change to an execution's row after it
    /// was committed (a result stored, a run started, a status moved): the
    /// HTTP long-poll waits on it instead of a timer.
    pub fn execution_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.execution_changes.subscribe()
    }

    /// Tells waiting clients that an execution changed (after the commit).
    pub(super) fn executions_changed(&self) {
        self.execution_changes
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Signalled when an audit entry is appended (see `db::audit`).
    pub(super) fn audit_appended(&self) -> &Arc<tokio::sync::Notify> {
        &self.audit_appended
    }
}

/// Counts into `count` each rollback of a transaction that changed a row
/// (SQLite's update hook marks the transaction, its commit hook clears the
/// mark, its rollback hook reads it). The update hook sees every row of a
/// rowid table (a test keeps every table one) except a `DELETE` without
/// `WHERE`, which this crate runs only outside a transaction (the freeze).
/// A commit that fails after its hook ran (out of memory) is not counted.
fn watch_rollbacks(conn: &Connection, count: Arc<AtomicU64>) {
    let wrote = Arc::new(AtomicBool::new(false));
    let marked = wrote.clone();
    conn.update_hook(Some(
        move |_: rusqlite::hooks::Action, _: &str, _: &str, _| {
            marked.store(true, Ordering::Relaxed);
        },
    ));
    let committed = wrote.clone();
    conn.commit_hook(Some(move || {
        committed.store(false, Ordering::Relaxed);
        // false: let the commit go ahead.
        false
    }));
    conn.rollback_hook(Some(move || {
        if wrote.swap(false, Ordering::Relaxed) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated database (its path is not used: it lives in memory).
    fn simulated() -> Db {
        Db::open_with(Path::new("unused.sqlite"), DbDurability::Simulated).expect("simulated db")
    }

    /// The simulated database has its larger pages (a `page_size` set
    /// after the first table would be ignored silently) and no journal; a
    /// server's keeps SQLite's default and its write-ahead log.
    #[test]
    fn each_durability_has_its_page_size_and_journal() {
        let pragma = |db: &Db, name: &str| -> String {
            db.lock()
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .expect("pragma")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let simulated = simulated();
        assert_eq!(pragma(&simulated, "page_size"), "65536");
        assert_eq!(pragma(&simulated, "journal_mode"), "off");
        let server = Db::open(&dir.path().join("server.sqlite")).expect("server db");
        assert_eq!(pragma(&server, "page_size"), "4096");
        assert_eq!(pragma(&server, "journal_mode"), "wal");
    }

    /// The rollback watch sees writes through SQLite's update hook, which
    /// is blind to `WITHOUT ROWID` tables: the schema must have none.
    #[test]
    fn every_table_has_a_rowid_for_the_rollback_watch() {
        let db = simulated();
        let conn = db.lock();
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL")
            .expect("schema");
        let tables: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(tables.len() > 10, "the schema has its tables: {tables:?}");
        for (name, sql) in tables {
            assert!(
                !sql.to_ascii_uppercase().contains("WITHOUT ROWID"),
                "table {name} is WITHOUT ROWID: the rollback watch cannot see its writes"
            );
        }
    }

    /// A rollback of a write on the journal-less simulated database is
    /// counted (it may have kept part of its writes); a committed
    /// transaction, a read-only one left without a commit, and a server's
    /// rollbacks are not.
    #[test]
    fn unjournaled_rollbacks_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let simulated = simulated();
        let server = Db::open(&dir.path().join("server.sqlite")).expect("server db");
        for db in [&simulated, &server] {
            let mut conn = db.lock();
            conn.execute_batch("CREATE TABLE t (x INTEGER)")
                .expect("table");
            let tx = conn.transaction().expect("begin");
            tx.execute("INSERT INTO t VALUES (1)", []).expect("insert");
            tx.commit().expect("commit");
            let tx = conn.transaction().expect("begin");
            let _: i64 = tx
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("read");
            drop(tx);
            let tx = conn.transaction().expect("begin");
            tx.execute("INSERT INTO t VALUES (2)", []).expect("insert");
            drop(tx);
        }
        assert_eq!(simulated.unjournaled_rollbacks(), 1);
        assert_eq!(server.unjournaled_rollbacks(), 0);
        // What the rollback could not undo stays: the reason it is counted.
        let rows: i64 = simulated
            .lock()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 2);
    }
}
