//! [`AgentGroups`]: the value stored per pc in the `agent_groups` bucket.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A pc's group memberships, always sorted and free of duplicates.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct AgentGroups {
    #[serde(default, deserialize_with = "sorted_unique")]
    groups: Vec<String>,
}

impl AgentGroups {
    /// Builds the membership list, sorting and de-duplicating it.
    pub fn new<I, S>(groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            groups: normalise(groups.into_iter().map(Into::into).collect()),
        }
    }

    /// The groups, sorted and unique.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether the pc belongs to `group`.
    pub fn contains(&self, group: &str) -> bool {
        self.groups
            .binary_search_by(|g| g.as_str().cmp(group))
            .is_ok()
    }
}

fn normalise(mut groups: Vec<String>) -> Vec<String> {
    groups.sort();
    groups.dedup();
    groups
}

fn sorted_unique<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(normalise(
        Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}
