//! Reserved exit codes an agent reports when it did not run a script to
//! completion. Each pairs with a fixed `skipped` flag ([`is_skip`]).

/// The agent restarted while the command was launching or running; the
/// outcome is unknown and the command is not relaunched. A failure.
pub const AGENT_RESTARTED: i32 = 121;
/// The OS cannot run the command (shell missing, no interactive session
/// for `run_as: user | system_gui`). A skip.
pub const UNSUPPORTED: i32 = 122;
/// The signature is missing or invalid on an enforcing host. A failure.
pub const SIGNATURE_REFUSED: i32 = 123;
/// `script_current[id]` differs from the command's version. A skip.
pub const VERSION_MISMATCH: i32 = 124;
/// The start deadline passed (also while queued for a slot). A skip.
pub const DEADLINE_PASSED: i32 = 125;
/// `script_status[id]` is `REVOKED`. A skip.
pub const REVOKED: i32 = 126;
/// Strict staleness: the agent could not prove its state is fresh. A skip.
pub const STALE: i32 = 127;
/// Killed through `kill.<exec_id>` or timed out; stderr says which. A failure.
pub const KILLED_OR_TIMED_OUT: i32 = -1;

/// Every reserved code, ascending.
pub const ALL: [i32; 8] = [
    KILLED_OR_TIMED_OUT,
    AGENT_RESTARTED,
    UNSUPPORTED,
    SIGNATURE_REFUSED,
    VERSION_MISMATCH,
    DEADLINE_PASSED,
    REVOKED,
    STALE,
];

/// Whether a result with this reserved code is a skip (`skipped: true`)
/// rather than a failure. Non-reserved codes are never skips.
pub fn is_skip(code: i32) -> bool {
    matches!(
        code,
        UNSUPPORTED | VERSION_MISMATCH | DEADLINE_PASSED | REVOKED | STALE
    )
}
