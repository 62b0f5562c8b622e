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
        // Security: API tokens, the audit trail, approvals (DESIGN §10).
        M::up(
            "CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            secret_sha256 TEXT NOT NULL,
            role TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT,
            revoked INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            source_ip TEXT,
            source_kind TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            outcome TEXT NOT NULL,
            params_sha256 TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            published INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX audit_unpublished ON audit(published) WHERE published = 0;
        CREATE TABLE approvals (
            exec_id TEXT NOT NULL,
            approver TEXT NOT NULL,
            decision TEXT NOT NULL,
            reason TEXT,
            at TEXT NOT NULL,
            PRIMARY KEY (exec_id, approver)
        );
        ALTER TABLE executions ADD COLUMN requested_by TEXT;
        ALTER TABLE executions ADD COLUMN approval TEXT;
        ALTER TABLE executions ADD COLUMN pending_command TEXT;",
        ),
        // Approved commands not yet sent (a crash between the quorum and
        // the publish): republished at start.
        M::up("ALTER TABLE executions ADD COLUMN command_published INTEGER NOT NULL DEFAULT 1;"),
        // A schedule of a job that requires approval waits for its
        // approvers once per job version.
        M::up(
            "CREATE TABLE schedule_approvals (
            schedule_id TEXT NOT NULL,
            version TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            approval TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (schedule_id, version)
        );",
        ),
        // Presence is the backend's receive time; the agent's own clock is
        // kept as an offset (heartbeat time minus receive time).
        M::up("ALTER TABLE agents ADD COLUMN clock_offset_ms INTEGER;"),
        // The pcs each execution counted, and answers from others.
        M::up(
            "CREATE TABLE execution_targets (
            exec_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            counted INTEGER NOT NULL,
            PRIMARY KEY (exec_id, pc_id)
        );
        ALTER TABLE executions ADD COLUMN targets_recorded INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE executions ADD COLUMN late_targets INTEGER NOT NULL DEFAULT 0;",
        ),
        // Which schedule fired an execution (NULL for exec).
        M::up("ALTER TABLE executions ADD COLUMN schedule_id TEXT;"),
        // Operator pins (a pin holds until cleared).
        M::up(
            "CREATE TABLE job_pins (
            job_id TEXT PRIMARY KEY,
            version TEXT NOT NULL,
            pinned_at TEXT NOT NULL
        );",
        ),
        // Self-stopping rollouts (DESIGN §11) and their targets.
        M::up(
            "CREATE TABLE rollouts (
            exec_id TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            command TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            wave INTEGER NOT NULL DEFAULT 0,
            wave_finished_at TEXT,
            budget_errors INTEGER NOT NULL DEFAULT 0,
            budget_results INTEGER NOT NULL DEFAULT 0,
            halt_actions_done INTEGER NOT NULL DEFAULT 0,
            halted_at TEXT,
            epoch INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE rollout_targets (
            exec_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            wave INTEGER NOT NULL,
            phase TEXT NOT NULL,
            outcome TEXT,
            dispatched_at TEXT,
            epoch INTEGER,
            PRIMARY KEY (exec_id, pc_id)
        );
        CREATE INDEX rollout_targets_by_phase ON rollout_targets (exec_id, wave, phase);",
        ),
        // Inventory and compliance from jobs (`crate::inventory`).
        M::up(
            "CREATE TABLE job_hints (
            job_id TEXT NOT NULL,
            version TEXT NOT NULL,
            inventory TEXT,
            check_hint TEXT,
            PRIMARY KEY (job_id, version)
        );
        CREATE TABLE inventory_facts (
            job_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            version TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            order_key TEXT NOT NULL,
            result_id TEXT NOT NULL,
            facts TEXT NOT NULL,
            PRIMARY KEY (job_id, pc_id)
        );
        CREATE TABLE inventory_rows (
            job_id TEXT NOT NULL,
            tbl TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            row_key TEXT NOT NULL,
            row TEXT NOT NULL,
            PRIMARY KEY (job_id, tbl, pc_id, row_key)
        );
        CREATE TABLE inventory_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            tbl TEXT,
            pc_id TEXT NOT NULL,
            change TEXT NOT NULL,
            row_key TEXT NOT NULL,
            before TEXT,
            after TEXT,
            at TEXT NOT NULL,
            result_id TEXT NOT NULL
        );
        CREATE INDEX inventory_history_by_job ON inventory_history (job_id, pc_id, at);
        CREATE TABLE check_states (
            check_name TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            version TEXT NOT NULL,
            status TEXT NOT NULL,
            detail TEXT NOT NULL,
            since TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            order_key TEXT NOT NULL,
            result_id TEXT NOT NULL,
            label TEXT,
            PRIMARY KEY (check_name, pc_id)
        );
        CREATE TABLE check_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            check_name TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            detail TEXT NOT NULL,
            at TEXT NOT NULL,
            result_id TEXT NOT NULL
        );
        CREATE TABLE check_alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            check_name TEXT NOT NULL,
            label TEXT,
            pc_id TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            detail TEXT NOT NULL,
            at TEXT NOT NULL,
            job_id TEXT NOT NULL,
            version TEXT NOT NULL,
            result_id TEXT NOT NULL,
            published INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE agent_hardware (
            pc_id TEXT PRIMARY KEY,
            collected_at TEXT NOT NULL,
            inventory TEXT NOT NULL
        );
        CREATE TABLE projection_skips (
            result_id TEXT NOT NULL,
            hint TEXT NOT NULL,
            job_id TEXT NOT NULL,
            pc_id TEXT NOT NULL,
            version TEXT NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (result_id, hint)
        );",
        ),
        // Self-update: versions a host rolled back (its heartbeats say).
        M::up("ALTER TABLE agents ADD COLUMN quarantined_versions TEXT;"),
        // Agent rollouts and their error budget.
        M::up(
            "CREATE TABLE agent_rollouts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            version TEXT NOT NULL,
            previous TEXT NOT NULL,
            max_errors INTEGER,
            status TEXT NOT NULL,
            reason TEXT,
            created_at TEXT NOT NULL
        );",
        ),
        // The console's pc page: a pc's recent results.
        M::up("CREATE INDEX results_by_pc ON results(pc_id, finished_at);"),
    ])
}
