//! Provisioning: every stream, KV bucket and object store kanade uses,
//! created idempotently with the limits of DESIGN §3.

use async_nats::jetstream::{self, stream};
use kanade_core::names::{self, ALL_STREAMS};
use kanade_core::transport::{KvConfig, StreamConfig, TransportError, TransportResult};

use crate::error::{backend, provisioning};
use crate::kv::kv_config;
use crate::log::stream_config;
use crate::NatsTransport;

/// What [`provision`] did to each stream, bucket and store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// Created because missing.
    pub created: Vec<String>,
    /// Existing, changed to the wanted settings (which settings, in brackets).
    pub updated: Vec<String>,
    /// Existing with the wanted settings.
    pub unchanged: Vec<String>,
}

/// History kept per key in each KV bucket.
pub fn bucket_history(bucket: &str) -> usize {
    match bucket {
        names::BUCKET_AGENTS_STATE | names::BUCKET_EXEC_KILLS => 1,
        _ => 5,
    }
}

/// Names of the settings that differ between an existing stream and the
/// wanted one.
fn differences(existing: &stream::Config, wanted: &stream::Config) -> Vec<&'static str> {
    let mut subjects_existing = existing.subjects.clone();
    let mut subjects_wanted = wanted.subjects.clone();
    subjects_existing.sort();
    subjects_wanted.sort();
    let checks = [
        ("subjects", subjects_existing != subjects_wanted),
        (
            "max_messages_per_subject",
            existing.max_messages_per_subject != wanted.max_messages_per_subject,
        ),
        ("max_bytes", existing.max_bytes != wanted.max_bytes),
        ("max_age", existing.max_age != wanted.max_age),
        (
            "duplicate_window",
            existing.duplicate_window != wanted.duplicate_window,
        ),
        ("num_replicas", existing.num_replicas != wanted.num_replicas),
        ("discard", existing.discard != wanted.discard),
        ("storage", existing.storage != wanted.storage),
    ];
    checks
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name)
        .collect()
}

/// Creates the stream if missing, updates it if its settings differ (JetStream
/// cannot change the storage type in place: that is reported as an error).
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
    report: &mut ProvisionReport,
) -> TransportResult<()> {
    let name = wanted.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(mut stream) => Some(
            stream
                .info()
                .await
                .map_err(|e| backend("stream info", e))?
                .config
                .clone(),
        ),
        Err(_) => None,
    };
    match existing {
        None => {
            js.create_stream(wanted)
                .await
                .map_err(|e| provisioning(&format!("creating stream {name}"), e))?;
            report.created.push(format!("stream {name}"));
        }
        Some(existing) => {
            let changed = differences(&existing, &wanted);
            if changed.is_empty() {
                report.unchanged.push(format!("stream {name}"));
            } else if changed.contains(&"storage") {
                return Err(TransportError::InvalidConfig(format!(
                    "stream {name} exists with storage {:?} but kanade needs {:?}; JetStream cannot change storage in place: back up and recreate the stream",
                    existing.storage, wanted.storage
                )));
            } else {
                js.update_stream(wanted).await.map_err(|e| {
                    TransportError::InvalidConfig(format!(
                        "stream {name}: updating {} was refused: {e}",
                        changed.join(", ")
                    ))
                })?;
                report
                    .updated
                    .push(format!("stream {name} [{}]", changed.join(", ")));
            }
        }
    }
    Ok(())
}

/// Provisions every stream, KV bucket and object store of DESIGN §3 with
/// the transport's replica count. Running it again changes nothing.
pub async fn provision(transport: &NatsTransport) -> TransportResult<ProvisionReport> {
    let js = &transport.shared.js;
    let replicas = transport.shared.replicas;
    let mut report = ProvisionReport::default();
    // A standalone server cannot hold replicas: say so rather than let
    // every create fail (or quietly keep one copy).
    let info = transport.shared.client.server_info();
    if replicas > 1 && info.cluster.is_none() {
        return Err(TransportError::InvalidConfig(format!(
            "replicas {replicas} needs a JetStream cluster, but server {} is standalone: use replicas 1, or connect to the cluster's servers",
            info.server_name
        )));
    }
    for spec in &ALL_STREAMS {
        ensure_stream(
            js,
            stream_config(&StreamConfig::from_spec(spec), replicas),
            &mut report,
        )
        .await?;
    }
    for bucket in names::ALL_BUCKETS
        .into_iter()
        .chain(names::EXTENSION_BUCKETS)
    {
        let mut config = KvConfig::new(bucket);
        config.history = bucket_history(bucket);
        config.ttl = names::bucket_ttl(bucket);
        // A KV bucket is the stream KV_<bucket>; compare it like any stream.
        let wanted = kv_config(&config, replicas);
        match js.get_key_value(bucket).await {
            Err(_) => {
                js.create_key_value(wanted)
                    .await
                    .map_err(|e| provisioning(&format!("creating bucket {bucket}"), e))?;
                report.created.push(format!("bucket {bucket}"));
            }
            Ok(_) => {
                let mut stream = js
                    .get_stream(format!("KV_{bucket}"))
                    .await
                    .map_err(|e| backend(&format!("reading bucket {bucket}"), e))?;
                let existing = stream
                    .info()
                    .await
                    .map_err(|e| backend("stream info", e))?
                    .config
                    .clone();
                let history_differs = existing.max_messages_per_subject != wanted.history;
                let replicas_differ = existing.num_replicas != wanted.num_replicas;
                let ttl_differs = existing.max_age != wanted.max_age;
                if history_differs || replicas_differ || ttl_differs {
                    js.create_or_update_key_value(wanted).await.map_err(|e| {
                        TransportError::InvalidConfig(format!(
                            "bucket {bucket}: update refused: {e}"
                        ))
                    })?;
                    let mut what = Vec::new();
                    if history_differs {
                        what.push("history");
                    }
                    if replicas_differ {
                        what.push("num_replicas");
                    }
                    if ttl_differs {
                        what.push("max_age");
                    }
                    report
                        .updated
                        .push(format!("bucket {bucket} [{}]", what.join(", ")));
                } else {
                    report.unchanged.push(format!("bucket {bucket}"));
                }
            }
        }
    }
    for store in names::ALL_OBJECT_STORES {
        match js.get_object_store(store).await {
            Ok(_) => {
                // An object store is the stream OBJ_<store>: keep its
                // replica count as asked.
                let mut stream = js
                    .get_stream(format!("OBJ_{store}"))
                    .await
                    .map_err(|e| backend(&format!("reading object store {store}"), e))?;
                let mut config = stream
                    .info()
                    .await
                    .map_err(|e| backend("stream info", e))?
                    .config
                    .clone();
                if config.num_replicas != replicas.max(1) {
                    config.num_replicas = replicas.max(1);
                    js.update_stream(config).await.map_err(|e| {
                        TransportError::InvalidConfig(format!(
                            "object store {store}: update refused: {e}"
                        ))
                    })?;
                    report
                        .updated
                        .push(format!("object store {store} [num_replicas]"));
                } else {
                    report.unchanged.push(format!("object store {store}"));
                }
            }
            Err(_) => {
                js.create_object_store(jetstream::object_store::Config {
                    bucket: store.to_owned(),
                    storage: stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| provisioning(&format!("creating object store {store}"), e))?;
                report.created.push(format!("object store {store}"));
            }
        }
    }
    Ok(report)
}
