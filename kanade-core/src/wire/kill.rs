//! [`KillRecord`]: the durable form of a kill, stored per execution in the
//! `exec_kills` bucket (a kanade extension; the reference only publishes
//! `kill.<exec_id>`, which an offline agent never sees).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An execution the operator killed. An agent that learns of one of its
/// commands after the kill (replayed from EXEC, or resumed after a restart)
/// never starts it: exit -1, not skipped, "killed before start".
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct KillRecord {
    /// The killed execution (also the bucket key).
    pub exec_id: String,
    /// When the backend recorded the kill.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub killed_at: DateTime<Utc>,
    /// The kill's signature headers (`Kanade-Sig`, `Kanade-Sig-Kid`,
    /// `Kanade-Sig-Alg`, `Kanade-Sig-At`) over the body the live
    /// `kill.<exec_id>` message carries: the execution id. Empty when the
    /// backend has no signing key (enforcing agents then ignore the record,
    /// as they ignore an unsigned live kill).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signature: BTreeMap<String, String>,
}
