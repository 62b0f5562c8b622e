//! JSON Schemas of every wire type, for non-Rust producers and consumers.
//!
//! `cargo run -p kanade-core --example export-schemas` writes them to
//! `schemas/<name>.json`; a test fails when the checked-in files are stale.

use std::collections::BTreeMap;

use schemars::{schema_for, Schema};

use super::*;

/// Every wire type's schema, keyed by the file stem it is exported under.
pub fn all_schemas() -> BTreeMap<&'static str, Schema> {
    BTreeMap::from([
        ("agent_config_scope", schema_for!(AgentConfigScope)),
        ("agent_groups", schema_for!(AgentGroups)),
        ("audit_event", schema_for!(AuditEvent)),
        ("command", schema_for!(Command)),
        ("effective_config", schema_for!(EffectiveConfig)),
        ("event_started", schema_for!(EventStarted)),
        ("exec_result", schema_for!(ExecResult)),
        ("heartbeat", schema_for!(Heartbeat)),
        ("hw_inventory", schema_for!(HwInventory)),
        ("kill_record", schema_for!(KillRecord)),
        ("net_inventory", schema_for!(NetInventory)),
        ("obs_event", schema_for!(ObsEvent)),
        ("sw_inventory", schema_for!(SwInventory)),
    ])
}

/// Renders a schema the way the exported files store it (pretty JSON, trailing newline).
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
