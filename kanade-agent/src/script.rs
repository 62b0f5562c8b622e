//! Script resolution: the body of a command's script, inline or from the
//! `scripts` object store through an on-disk cache keyed by digest, checked
//! against its size limit and digest before it runs.

use std::sync::Arc;

use kanade_core::names::OBJECT_SCRIPTS;
use kanade_core::policy::script::{verify_script_body, MAX_SCRIPT_BYTES};
use kanade_core::transport::ObjectStoreConfig;
use kanade_core::wire::Command;
use tokio::io::AsyncReadExt;

use crate::outbox::write_durably;
use crate::state::Inner;

/// Resolves the script body: inline, or from the `scripts` object store
/// through an on-disk cache keyed by digest (re-hashed on every read).
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
    if let Ok(bytes) = std::fs::read(&cache) {
        match verify_script_body(&bytes, &digest) {
            Ok(body) => return Ok(body.to_owned()),
            Err(e) => {
                tracing::warn!(path = %cache.display(), "cached script failed verification, refetching: {e}");
                let _ = std::fs::remove_file(&cache);
            }
        }
    }
    let store = inner
        .transport
        .object_store(ObjectStoreConfig::new(OBJECT_SCRIPTS))
        .await
        .map_err(|e| format!("scripts store: {e}"))?;
    let reader = store
        .get(object)
        .await
        .map_err(|e| format!("fetching script {object:?}: {e}"))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_SCRIPT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading script {object:?}: {e}"))?;
    let body = verify_script_body(&bytes, &digest)
        .map_err(|e| format!("script {object:?} refused: {e}"))?;
    if let Err(e) = write_durably(&cache, &bytes) {
        tracing::warn!("script cache not written: {e}");
    }
    Ok(body.to_owned())
}
