//! Push, not poll: `GET /api/executions/{id}?after=<fingerprint>&wait=30s`
//! holds the request until the execution changes (a result stored, a run
//! started, its status moved), woken by the store's change signal — no
//! timer on either side — and returns the row; after `wait` it returns
//! the row unchanged. The client passes the fingerprint of the row it has
//! (`ExecutionRow::fingerprint`) and asks again.

use std::time::Duration;

use super::blocking::db;
use super::bodies::ExecutionWait;
use crate::db::ExecutionRow;
use crate::{Backend, BackendError};

/// The longest a request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The execution, once it differs from `wait.after` or `wait.wait` passed.
pub(super) async fn execution(
    backend: &Backend,
    id: &str,
    wait: &ExecutionWait,
) -> Result<ExecutionRow, BackendError> {
    let limit = match &wait.wait {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| BackendError::Invalid(format!("wait: {text:?} is not a duration: {e}")))?
            .min(MAX_WAIT),
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut changes = backend.db().execution_changes();
    loop {
        // Marked seen before the read: a change between the read and the
        // wait is not missed.
        changes.borrow_and_update();
        let lookup = id.to_owned();
        let row = db(backend, move |db| db.execution(&lookup))
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("execution {id}")))?;
        let unchanged = wait.after.as_deref() == Some(row.fingerprint().as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            return Ok(row);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            // A change (to some execution): read again.
            Ok(Ok(())) => {}
            // The store is closing: the row as it is.
            Ok(Err(_)) => return Ok(row),
            // Waited the whole time: the loop returns the row as it is.
            Err(_) => {}
        }
    }
}
