//! Config layering: built-in defaults → `global` → `groups.<g>` in
//! alphabetical order → `pcs.<pc>`, field by field; the last layer that
//! sets a field wins.

use std::collections::BTreeMap;

use crate::wire::{AgentConfigScope, EffectiveConfig};

/// Flattens the scopes that apply to one pc into its effective config.
///
/// `group_scopes` may hold every group's scope; only those named in
/// `pc_groups` apply, in alphabetical order (so with two groups setting
/// the same field, the alphabetically last wins).
pub fn resolve(
    global: Option<&AgentConfigScope>,
    group_scopes: &BTreeMap<String, AgentConfigScope>,
    pc_groups: &[String],
    pc: Option<&AgentConfigScope>,
) -> EffectiveConfig {
    let mut groups: Vec<&str> = pc_groups.iter().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    let layers = global
        .into_iter()
        .chain(groups.into_iter().filter_map(|g| group_scopes.get(g)))
        .chain(pc);
    layers.fold(EffectiveConfig::default(), apply)
}

/// Applies one scope on top of `config`: every field the scope sets replaces
/// the current value.
pub fn apply(mut config: EffectiveConfig, scope: &AgentConfigScope) -> EffectiveConfig {
    macro_rules! set_optional {
        ($($field:ident),*) => {$(
            if let Some(value) = &scope.$field {
                config.$field = Some(value.clone());
            }
        )*};
    }
    macro_rules! set_required {
        ($($field:ident),*) => {$(
            if let Some(value) = &scope.$field {
                config.$field = value.clone();
            }
        )*};
    }
    set_optional!(
        max_local_concurrent,
        target_version,
        process_perf_expires_at,
        client_display_name
    );
    set_required!(
        target_version_jitter,
        heartbeat_interval,
        host_perf_interval,
        process_perf_enabled,
        process_perf_top_n
    );
    config
}
