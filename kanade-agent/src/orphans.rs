//! Scripts a crashed agent left running. Right after it spawns a script
//! the runner records the process group and the leader's start time
//! (`<state>/processes/<request_id>.json`, next to the ledger); when the agent starts again and
//! finds a command it was running (reported 121), it terminates that group
//! first — unless the pid now belongs to another process (its start time
//! differs), which is never signalled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A spawned script's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The process group id (the leader's pid).
    pub pgid: u32,
    /// The leader's start time, in clock ticks since boot
    /// (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// The directory of the records, in the agent's state directory.
pub fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("processes")
}

/// Where the record of `request_id` lives in `records_dir`.
pub fn record_path(records_dir: &Path, request_id: &str) -> PathBuf {
    records_dir.join(format!("{request_id}.json"))
}

/// The start time of process `pid` in clock ticks since boot, if it runs.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name: state is field 3, starttime 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// Whether the recorded group may be signalled (pure): its leader is gone
/// (a pid still used as a group id is not reused, so the members left are
/// ours) or is still the process that was recorded.
pub fn may_signal(recorded_start: u64, leader_start_now: Option<u64>) -> bool {
    leader_start_now.is_none_or(|now| now == recorded_start)
}

fn group_alive(pgid: u32) -> bool {
    i32::try_from(pgid)
        .is_ok_and(|pgid| nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok())
}

fn signal(pgid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
}

/// Terminates the group a previous life of the agent left for
/// `request_id` (SIGTERM, then SIGKILL after `grace`), removes the record,
/// and says what it did (`None`: nothing was left running).
pub async fn terminate_left_over(
    records_dir: &Path,
    request_id: &str,
    grace: Duration,
) -> Option<String> {
    let path = record_path(records_dir, request_id);
    let record: ProcessRecord = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let _ = std::fs::remove_file(&path);
    if !group_alive(record.pgid) {
        return None;
    }
    if !may_signal(record.start_ticks, start_ticks(record.pgid)) {
        tracing::warn!(
            pgid = record.pgid,
            "the recorded process id now belongs to another process; not signalled"
        );
        return None;
    }
    signal(record.pgid, nix::sys::signal::Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while group_alive(record.pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(record.pgid) {
        signal(record.pgid, nix::sys::signal::Signal::SIGKILL);
    }
    tracing::warn!(
        pgid = record.pgid,
        request_id,
        "terminated the script a previous run of the agent left running"
    );
    Some(format!(
        "kanade: its process group ({}) was still running and has been terminated",
        record.pgid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_process_is_signalled() {
        assert!(may_signal(100, Some(100)));
        assert!(!may_signal(100, Some(101)), "a reused pid");
        assert!(
            may_signal(100, None),
            "the leader is gone, its group is ours"
        );
        let me = std::process::id();
        assert!(start_ticks(me).is_some());
        assert_eq!(start_ticks(me), start_ticks(me));
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
