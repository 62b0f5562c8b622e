//! Script resolution: the body of a command's script, inline or from the
//! `scripts` object store through an on-disk cache keyed by digest, checked
//! against its size limit and digest before it runs.

use std::sync::Arc;

use kanade_core::names::OBJECT_SCRIPTS;
use kanade_core::policy::script::{verify_script_body, MAX_SCRIPT_BYTES};
use kanade_core::transport::ObjectStoreConfig;
use kanade_core::wire::Command;
use tokio::io::AsyncReadExt;

use crate::state::Inner;

/// Resolves the script body: inline, or from the `scripts` object store
/// through an on-disk cache keyed by digest (re-hashed on every read).
/// How long a script fetch that fails for a transient reason (the broker
/// away, a stream leader being elected) is retried before the run fails.
const FETCH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The script object's bytes (at most `MAX_SCRIPT_BYTES + 1`), retrying a
/// transient failure — disconnected, timed out, the server failing —
/// with a backoff from 0.5 s to 5 s for up to [`FETCH_PATIENCE`]: a
/// failover of the broker must not fail a run. A missing object or a
/// refused configuration fails at once.
async fn fetch_with_retries(inner: &Arc<Inner>, object: &str) -> Result<Vec<u8>, String> {
    let started = tokio::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match fetch_once(inner, object).await {
            Ok(bytes) => return Ok(bytes),
            Err((why, retryable)) => {
                if !retryable || started.elapsed() + backoff > FETCH_PATIENCE {
                    return Err(why);
                }
                tracing::warn!("{why}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// One try of [`fetch_with_retries`]: the error and whether it may pass.
async fn fetch_once(inner: &Arc<Inner>, object: &str) -> Result<Vec<u8>, (String, bool)> {
    let store = inner
        .transport
        .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
        .await
        .map_err(|e| (format!("scripts store: {e}"), e.is_retryable()))?;
    let reader = store
        .get(object)
        .await
        .map_err(|e| (format!("fetching script {object:?}: {e}"), e.is_retryable()))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_SCRIPT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| (format!("reading script {object:?}: {e}"), true))?;
    Ok(bytes)
}

pub(crate) async fn resolve_script(
    inner: &Arc<Inner>,
    command: &Command,
) -> Result<String, String> {
    let Some(object) = &command.script_object else {
        if command.script.len() > MAX_SCRIPT_BYTES {
            return Err(format!(
                "inline script is {} bytes; at most {MAX_SCRIPT_BYTES} are allowed",
                command.script.len()
            ));
        }
        return Ok(command.script.clone());
    };
    let digest = command
        .script_object_sha256
        .as_deref()
        .ok_or_else(|| format!("script_object {object:?} has no script_object_sha256"))?
        .to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "script_object_sha256 {digest:?} is not a sha256 hex digest"
        ));
    }
    let cache = inner
        .settings
        .state_dir
        .join("scripts")
        .join(format!("{digest}.body"));
    if let Ok(bytes) = inner.files.read(&cache) {
        match verify_script_body(&bytes, &digest) {
            Ok(body) => return Ok(body.to_owned()),
            Err(e) => {
                tracing::warn!(path = %cache.display(), "cached script failed verification, refetching: {e}");
                let _ = inner.files.remove(&cache);
            }
        }
    }
    let bytes = fetch_with_retries(inner, object).await?;
    let body = verify_script_body(&bytes, &digest)
        .map_err(|e| format!("script {object:?} refused: {e}"))?;
    if let Err(e) = inner.files.write(&cache, &bytes, true) {
        tracing::warn!("script cache not written: {e}");
    }
    Ok(body.to_owned())
}
