//! The `key=value;key=value` script format that simulated runners (the
//! `kanade-sim` fleet and this crate's tests) read instead of running a
//! shell: `sleep=<secs>;exit=<code>` and so on.

/// Reads `key=<number>` from a simulated script written as `k=v;k=v`.
///
/// ```
/// use kanade_agent::scripted::script_field;
///
/// assert_eq!(script_field("sleep=3;exit=2", "exit"), Some(2));
/// assert_eq!(script_field("sleep=3", "exit"), None);
/// ```
pub fn script_field(script: &str, key: &str) -> Option<u64> {
    script
        .split(';')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim().parse().ok())
}
