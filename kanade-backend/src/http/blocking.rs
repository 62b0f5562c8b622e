//! Database calls from handlers, on the blocking pool.

use crate::{Backend, BackendError};

/// Runs `work` against the backend's database on the blocking pool.
pub(super) async fn db<T: Send + 'static>(
    backend: &Backend,
    work: impl FnOnce(&crate::db::Db) -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, BackendError> {
    let db = backend.db().clone();
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(BackendError::DbTask)?
        .map_err(BackendError::from)
}
