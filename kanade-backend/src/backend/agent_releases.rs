//! Agent releases and their rollout (see
//! `kanade_core::policy::release`): publishing a binary with a signed
//! description into `agent_releases`, and setting `target_version` in the
//! layered agent config (global, `groups.<g>`, `pcs.<pc>`).

use std::collections::BTreeMap;

use kanade_core::names::{
    agent_config_group_key, agent_config_pc_key, SubjectToken, BUCKET_AGENT_CONFIG,
    KEY_AGENT_CONFIG_GLOBAL, OBJECT_AGENT_RELEASES,
};
use kanade_core::policy::release::{
    binary_object, is_valid_name, release_object, ReleaseManifest, SignedRelease,
};
use kanade_core::policy::script::sha256_hex;
use kanade_core::transport::ObjectStoreConfig;
use serde::{Deserialize, Serialize};

use super::core::Backend;
use super::error::BackendError;
use crate::manifest::Target;

/// A published release as listed: its manifest and who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseListing {
    /// What the release is.
    pub manifest: ReleaseManifest,
    /// The kid of the key that signed it.
    pub signed_by: String,
}

/// The agents' versions: how many run each, and which hosts quarantined
/// which version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSpread {
    /// Agent version → number of agents reporting it.
    pub versions: BTreeMap<String, usize>,
    /// Quarantined version → the pcs that rolled it back.
    pub quarantined: BTreeMap<String, Vec<String>>,
}

impl Backend {
    /// Publishes `body` as agent `version` for `platform`: stores the
    /// binary at `<platform>/<version>` and its description, signed with
    /// the backend's signing key, at `<platform>/<version>.release`.
    /// Publishing the same version again replaces both.
    ///
    /// # Errors
    /// [`BackendError::Invalid`] for a bad version or platform name or an
    /// empty body, or when the backend has no signing key (agents install
    /// only signed releases); a transport error if a store write fails.
    pub async fn publish_release(
        &self,
        version: &str,
        platform: &str,
        body: bytes::Bytes,
    ) -> Result<ReleaseManifest, BackendError> {
        for (what, value) in [("version", version), ("platform", platform)] {
            if !is_valid_name(value) {
                return Err(BackendError::Invalid(format!(
                    "{what} {value:?}: use 1-64 letters, digits, '.', '-', '_' or '+', not starting with '.'"
                )));
            }
        }
        if body.is_empty() {
            return Err(BackendError::Invalid("the release binary is empty".into()));
        }
        let Some(signer) = &self.settings.signer else {
            return Err(BackendError::Invalid(
                "this backend has no signing key, and agents install only signed releases: start it with --signing-key".into(),
            ));
        };
        let manifest = ReleaseManifest {
            version: version.to_owned(),
            platform: platform.to_owned(),
            size: body.len() as u64,
            sha256: sha256_hex(&body),
        };
        let signed = SignedRelease::sign(&manifest, signer, self.now().timestamp_millis());
        let description = serde_json::to_vec_pretty(&signed).map_err(BackendError::Encode)?;
        let store = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_AGENT_RELEASES))
            .await?;
        // The binary first: a description never names a body that is not
        // there yet.
        store
            .put(&binary_object(platform, version), &mut body.as_ref())
            .await?;
        store
            .put(
                &release_object(platform, version),
                &mut description.as_slice(),
            )
            .await?;
        tracing::info!(
            version,
            platform,
            size = manifest.size,
            sha256 = manifest.sha256,
            "agent release published"
        );
        Ok(manifest)
    }

    /// Every published release, by platform and version.
    ///
    /// # Errors
    /// A transport error listing or reading the store.
    pub async fn releases(&self) -> Result<Vec<ReleaseListing>, BackendError> {
        let store = self
            .transport
            .object_store(ObjectStoreConfig::new(OBJECT_AGENT_RELEASES))
            .await?;
        let mut listings = Vec::new();
        for info in store.list().await? {
            if !info.name.ends_with(".release") {
                continue;
            }
            let mut text = Vec::new();
            let mut reader = store.get(&info.name).await?;
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut text)
                .await
                .map_err(|e| BackendError::Internal(format!("reading {}: {e}", info.name)))?;
            let Ok(signed) = serde_json::from_slice::<SignedRelease>(&text) else {
                continue;
            };
            let Ok(manifest) = serde_json::from_str::<ReleaseManifest>(&signed.manifest) else {
                continue;
            };
            listings.push(ReleaseListing {
                manifest,
                signed_by: signed
                    .signature
                    .get(kanade_core::policy::signature::HEADER_KID)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        Ok(listings)
    }

    /// Rolls agents out to `version`: sets `target_version` (and
    /// `target_version_jitter`, when given) in the agent-config scope of
    /// `target` — `global` for all, `groups.<g>`, `pcs.<pc>` — keeping the
    /// scope's other settings. Returns the keys written.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] when no platform has a release of
    /// `version`; `Invalid` for an empty target, a bad jitter or a bad
    /// group or pc name; a transport error if the config cannot be written.
    pub async fn roll_out_agents(
        &self,
        version: &str,
        target: &Target,
        jitter: Option<&str>,
    ) -> Result<Vec<String>, BackendError> {
        if !self
            .releases()
            .await?
            .iter()
            .any(|r| r.manifest.version == version)
        {
            return Err(BackendError::NotFound(format!(
                "agent release {version} (publish it first: kanade agent publish --version {version} --file BIN)"
            )));
        }
        if let Some(jitter) = jitter {
            humantime::parse_duration(jitter)
                .map_err(|e| BackendError::Invalid(format!("jitter {jitter:?}: {e}")))?;
        }
        let keys = config_keys(target)?;
        let bucket = self.bucket(BUCKET_AGENT_CONFIG).await?;
        for key in &keys {
            let mut scope = match bucket.get(key).await? {
                Some(entry) => serde_json::from_slice::<serde_json::Value>(&entry.value)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({})),
                None => serde_json::json!({}),
            };
            scope["target_version"] = serde_json::Value::from(version);
            if let Some(jitter) = jitter {
                scope["target_version_jitter"] = serde_json::Value::from(jitter);
            }
            let text = serde_json::to_vec(&scope).map_err(BackendError::Encode)?;
            bucket.put(key, text.into()).await?;
        }
        tracing::info!(version, ?keys, "agent rollout set");
        Ok(keys)
    }

    /// How many known agents report each version.
    ///
    /// # Errors
    /// A database error.
    pub async fn agent_versions(&self) -> Result<VersionSpread, BackendError> {
        let db = self.db.clone();
        let since = self.online_since();
        let agents = self.run_db(move || db.agents(since)).await?;
        let mut spread = VersionSpread::default();
        for agent in agents {
            *spread.versions.entry(agent.agent_version).or_default() += 1;
            for version in agent.quarantined_versions {
                spread
                    .quarantined
                    .entry(version)
                    .or_default()
                    .push(agent.pc_id.clone());
            }
        }
        Ok(spread)
    }
}

/// The `agent_config` keys a rollout target writes.
fn config_keys(target: &Target) -> Result<Vec<String>, BackendError> {
    let mut keys = Vec::new();
    if target.all {
        keys.push(KEY_AGENT_CONFIG_GLOBAL.to_owned());
    }
    for group in &target.groups {
        keys.push(agent_config_group_key(&SubjectToken::group(group.clone())?));
    }
    for pc in &target.pcs {
        keys.push(agent_config_pc_key(&SubjectToken::pc(pc.clone())?));
    }
    if keys.is_empty() {
        return Err(BackendError::Invalid(
            "no target: give all, groups or pcs".into(),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_config_scopes() {
        let target = Target {
            all: true,
            groups: vec!["canary".into()],
            pcs: vec!["pc-1".into()],
        };
        assert_eq!(
            config_keys(&target).unwrap(),
            ["global", "groups.canary", "pcs.pc-1"]
        );
        assert!(config_keys(&Target::default()).is_err());
        let bad = Target {
            pcs: vec!["a.b".into()],
            ..Target::default()
        };
        assert!(config_keys(&bad).is_err());
    }
}
