//! Object stores over the JetStream object store.

use std::sync::Arc;

use async_nats::jetstream::object_store;
use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use kanade_core::transport::{
    ObjectInfo, ObjectReader, ObjectStore, TransportError, TransportResult,
};
use tokio::io::AsyncRead;

use crate::error::backend;
use crate::Shared;

pub(crate) struct NatsObjects {
    pub(crate) bucket: String,
    pub(crate) store: object_store::ObjectStore,
}

/// Opens a store, creating it when missing.
pub(crate) async fn open(shared: Arc<Shared>, bucket: String) -> TransportResult<NatsObjects> {
    let store = match shared.js.get_object_store(&bucket).await {
        Ok(store) => store,
        Err(_) => shared
            .js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: shared.replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| backend(&format!("creating object store {bucket}"), e))?,
    };
    Ok(NatsObjects { bucket, store })
}

/// NATS stores `SHA-256=<base64url>`; kanade reports lowercase hex.
fn hex_digest(digest: Option<&str>) -> String {
    let Some(encoded) = digest.and_then(|d| d.strip_prefix("SHA-256=")) else {
        return String::new();
    };
    let engine = base64::engine::general_purpose::URL_SAFE;
    let bytes = engine
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn info(info: object_store::ObjectInfo) -> ObjectInfo {
    ObjectInfo {
        sha256: hex_digest(info.digest.as_deref()),
        size: info.size as u64,
        modified: info.modified.unwrap_or_default(),
        name: info.name,
    }
}

impl NatsObjects {
    fn not_found(&self, name: &str) -> TransportError {
        TransportError::not_found(format!("object {name:?} in bucket {}", self.bucket))
    }
}

#[async_trait]
impl ObjectStore for NatsObjects {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(
        &self,
        name: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> TransportResult<ObjectInfo> {
        if name.is_empty() {
            return Err(TransportError::InvalidConfig("object name is empty".into()));
        }
        let mut reader = reader;
        self.store
            .put(name, &mut reader)
            .await
            .map(info)
            .map_err(|e| backend(&format!("putting object {name:?}"), e))
    }

    async fn get(&self, name: &str) -> TransportResult<ObjectReader> {
        match self.store.get(name).await {
            Ok(object) => Ok(Box::new(object)),
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => Err(self.not_found(name)),
            Err(e) => Err(backend(&format!("getting object {name:?}"), e)),
        }
    }

    async fn info(&self, name: &str) -> TransportResult<ObjectInfo> {
        match self.store.info(name).await {
            Ok(found) if !found.deleted => Ok(info(found)),
            Ok(_) => Err(self.not_found(name)),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => {
                Err(self.not_found(name))
            }
            Err(e) => Err(backend(&format!("object info {name:?}"), e)),
        }
    }

    async fn delete(&self, name: &str) -> TransportResult<()> {
        match self.store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {
                Err(self.not_found(name))
            }
            Err(e) => Err(backend(&format!("deleting object {name:?}"), e)),
        }
    }

    async fn list(&self) -> TransportResult<Vec<ObjectInfo>> {
        let list = self
            .store
            .list()
            .await
            .map_err(|e| backend(&format!("listing {}", self.bucket), e))?;
        let mut infos: Vec<ObjectInfo> = list
            .filter_map(|i| async move { i.ok().filter(|i| !i.deleted).map(info) })
            .collect()
            .await;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_is_converted_to_hex() {
        // sha256("") in NATS form.
        let nats = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            super::hex_digest(Some(nats)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(super::hex_digest(None), "");
    }
}
