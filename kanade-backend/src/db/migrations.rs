//! The schema, as ordered migrations (applied by [`super::core::Db::open`]).

use rusqlite_migration::{Migrations, M};

/// Every migration, oldest first. Append only: never edit a shipped one.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE executions (
            exec_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            version TEXT NOT NULL,
            request_id TEXT NOT NULL,
            target TEXT NOT NULL,
            targeted INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started INTEGER NOT NULL DEFAULT 0,
            succeeded INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            reap_after_secs INTEGER NOT NULL DEFAULT 3600
        );
        CREATE TABLE results (
            result_id TEXT PRIMARY KEY,
            exec_id TEXT,
            request_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            exit_code INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            stdout TEXT NOT NULL,
            stderr TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            manifest_id TEXT,
            reaped INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX results_by_exec ON results(exec_id);
        CREATE TABLE runs (
            result_id TEXT PRIMARY KEY,
            exec_id TEXT,
            request_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            started_at TEXT NOT NULL,
            deadline_at TEXT NOT NULL
        );
        CREATE TABLE agents (
            pc_id TEXT PRIMARY KEY,
            last_seen TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            hostname TEXT,
            os_family TEXT
        );",
        ),
        M::up(
            "CREATE TABLE schedule_fires (
            schedule_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            version TEXT NOT NULL,
            fired_at TEXT NOT NULL,
            exec_id TEXT,
            PRIMARY KEY (schedule_id, scope)
        );
        CREATE TABLE schedule_cursor (
            schedule_id TEXT PRIMARY KEY,
            checked_until TEXT NOT NULL
        );
        CREATE TABLE freeze (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            until TEXT,
            reason TEXT
        );",
        ),
        M::up(
            "CREATE TABLE waves (
            schedule_id TEXT NOT NULL,
            fire_key TEXT NOT NULL,
            wave INTEGER NOT NULL,
            grp TEXT NOT NULL,
            due_at TEXT NOT NULL,
            deadline_base TEXT NOT NULL,
            exec_id TEXT NOT NULL,
            fired INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (schedule_id, fire_key, wave)
        );",
        ),
    ])
}
