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
use kanade_core::transport::ext::ObjectStoreExt;
use kanade_core::transport::ObjectStoreConfig;
use serde::{Deserialize, Serialize};

use super::core::Backend;
use super::error::BackendError;
use crate::db::AgentRolloutRow;
use crate::manifest::Target;

/// A published release as listed: its manifest and who signed it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseListing {
    /// What the release is.
    pub manifest: ReleaseManifest,
    /// The kid of the key that signed it.
    pub signed_by: String,
}

/// The agents' versions: how many run each, and which hosts quarantined
/// which version.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
            let text = store.get_bytes(&info.name, 64 * 1024).await?;
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
        self.roll_out_agents_with(version, target, jitter, None)
            .await
    }

    /// [`Backend::roll_out_agents`] with an error budget: once
    /// `max_errors` hosts report the version quarantined (it never started
    /// healthy there and was rolled back), the rollout **halts** — each
    /// scope it set gets back the `target_version` it had before, so no
    /// other host installs the version — and the halt is audited
    /// (`agent_rollout.halt`). The rollout issue's halt rule, applied to
    /// agent versions.
    ///
    /// # Errors
    /// As [`Backend::roll_out_agents`].
    pub async fn roll_out_agents_with(
        &self,
        version: &str,
        target: &Target,
        jitter: Option<&str>,
        max_errors: Option<u32>,
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
        let mut previous = BTreeMap::new();
        for key in &keys {
            let mut scope = config_scope(&bucket, key).await?;
            previous.insert(
                key.clone(),
                scope["target_version"].as_str().map(str::to_owned),
            );
            scope["target_version"] = serde_json::Value::from(version);
            if let Some(jitter) = jitter {
                scope["target_version_jitter"] = serde_json::Value::from(jitter);
            }
            let text = serde_json::to_vec(&scope).map_err(BackendError::Encode)?;
            bucket.put(key, text.into()).await?;
        }
        let db = self.db.clone();
        let (v, now) = (version.to_owned(), self.now());
        self.run_db(move || db.record_agent_rollout(&v, &previous, max_errors, now))
            .await?;
        tracing::info!(version, ?keys, ?max_errors, "agent rollout set");
        Ok(keys)
    }

    /// The current (newest) agent rollout.
    ///
    /// # Errors
    /// A database error.
    pub async fn agent_rollout(&self) -> Result<Option<AgentRolloutRow>, BackendError> {
        let db = self.db.clone();
        self.run_db(move || db.current_agent_rollout()).await
    }

    /// Applies the current agent rollout's error budget (the heartbeat
    /// projector calls it when a heartbeat reports a quarantine): past it,
    /// halts the rollout as [`Backend::roll_out_agents_with`] says.
    /// Returns the halt's reason when it halted now.
    ///
    /// # Errors
    /// A transport or database error (the next quarantine report tries
    /// again).
    pub async fn check_agent_rollout(&self) -> Result<Option<String>, BackendError> {
        let Some(rollout) = self.agent_rollout().await? else {
            return Ok(None);
        };
        let Some(max_errors) = rollout.max_errors else {
            return Ok(None);
        };
        if rollout.status != "rolling" {
            return Ok(None);
        }
        let db = self.db.clone();
        let version = rollout.version.clone();
        let pcs = self.run_db(move || db.pcs_quarantining(&version)).await?;
        if pcs.len() < max_errors as usize {
            return Ok(None);
        }
        let bucket = self.bucket(BUCKET_AGENT_CONFIG).await?;
        for (key, before) in &rollout.previous {
            let mut scope = config_scope(&bucket, key).await?;
            if scope["target_version"].as_str() != Some(rollout.version.as_str()) {
                continue; // set again since: not this rollout's any more
            }
            match before {
                Some(before) => scope["target_version"] = serde_json::Value::from(before.as_str()),
                None => {
                    if let Some(map) = scope.as_object_mut() {
                        map.remove("target_version");
                    }
                }
            }
            let text = serde_json::to_vec(&scope).map_err(BackendError::Encode)?;
            bucket.put(key, text.into()).await?;
        }
        let reason = format!(
            "{} host(s) quarantined {} (budget {max_errors}): {}",
            pcs.len(),
            rollout.version,
            pcs.join(", ")
        );
        let db = self.db.clone();
        let (id, text) = (rollout.id, reason.clone());
        self.run_db(move || db.halt_agent_rollout(id, &text))
            .await?;
        let mut entry = self.own_audit_draft("agent_rollout.halt", crate::audit::OUTCOME_OK);
        entry.target = Some(rollout.version.clone());
        entry.params = serde_json::json!({"reason": reason, "pcs": pcs});
        let db = self.db.clone();
        if let Err(e) = self.run_db(move || db.append_audit(entry)).await {
            tracing::error!("agent rollout halt not audited: {e}");
        }
        tracing::warn!(version = rollout.version, "agent rollout halted: {reason}");
        Ok(Some(reason))
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

/// The `agent_config` scope at `key` as a JSON object (empty if absent or
/// unreadable).
async fn config_scope(
    bucket: &std::sync::Arc<dyn kanade_core::transport::KeyValue>,
    key: &str,
) -> Result<serde_json::Value, BackendError> {
    Ok(match bucket.get(key).await? {
        Some(entry) => serde_json::from_slice::<serde_json::Value>(&entry.value)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({})),
        None => serde_json::json!({}),
    })
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
