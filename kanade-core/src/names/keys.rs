//! `agent_config` key builders and their inverses.

use super::{SubjectToken, PREFIX_AGENT_CONFIG_GROUPS, PREFIX_AGENT_CONFIG_PCS};

/// The `agent_config` key of a group scope: `groups.<g>`.
pub fn agent_config_group_key(group: &SubjectToken) -> String {
    format!("{PREFIX_AGENT_CONFIG_GROUPS}{group}")
}

/// The `agent_config` key of a pc scope: `pcs.<pc>`.
pub fn agent_config_pc_key(pc: &SubjectToken) -> String {
    format!("{PREFIX_AGENT_CONFIG_PCS}{pc}")
}

/// The group name of a `groups.<g>` key, or `None` for any other key.
pub fn parse_agent_config_group_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX_AGENT_CONFIG_GROUPS)
        .filter(|rest| !rest.is_empty())
}

/// The pc id of a `pcs.<pc>` key, or `None` for any other key.
pub fn parse_agent_config_pc_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX_AGENT_CONFIG_PCS)
        .filter(|rest| !rest.is_empty())
}
