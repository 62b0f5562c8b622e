//! Inventory and emitted observability events.

use chrono::{DateTime, Utc};
use kanade_core::wire::{Disk, HwInventory, ObsEvent};
use serde_json::Value;

/// Collects the hardware inventory of this host (blocking; call off the
/// async threads).
pub fn collect_hw_inventory(pc_id: &str, at: DateTime<Utc>) -> HwInventory {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let disks = sysinfo::Disks::new_with_refreshed_list();
    HwInventory {
        pc_id: pc_id.to_owned(),
        at,
        hostname: sysinfo::System::host_name(),
        os_name: sysinfo::System::long_os_version().or_else(sysinfo::System::name),
        os_version: sysinfo::System::os_version(),
        kernel_version: sysinfo::System::kernel_version(),
        cpu_model: system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .filter(|b| !b.is_empty()),
        cpu_cores: u32::try_from(system.cpus().len()).ok().filter(|n| *n > 0),
        memory_bytes: Some(system.total_memory()).filter(|m| *m > 0),
        disks: disks
            .list()
            .iter()
            .map(|d| Disk {
                mount: d.mount_point().display().to_string(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect(),
    }
}

/// Parses a script's stdout as NDJSON observability events. Each non-blank
/// line must be a JSON object with a string `kind`; `pc_id` is always this
/// agent's (a script cannot speak for another pc), `at` defaults to `now`,
/// `source` to the job id. Returns the events and how many lines were bad.
pub fn parse_emitted_events(
    stdout: &str,
    pc_id: &str,
    job_id: &str,
    now: DateTime<Utc>,
) -> (Vec<ObsEvent>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
            bad += 1;
            continue;
        };
        let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
            bad += 1;
            continue;
        };
        let at = match fields.get("at") {
            None => Some(now),
            Some(value) => value
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        };
        let Some(at) = at else {
            bad += 1;
            continue;
        };
        events.push(ObsEvent {
            pc_id: pc_id.to_owned(),
            at,
            kind: kind.to_owned(),
            source: fields
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or(job_id)
                .to_owned(),
            event_record_id: fields.get("event_record_id").and_then(Value::as_u64),
            payload: fields.get("payload").cloned().unwrap_or(Value::Null),
        });
    }
    (events, bad)
}

/// A `kB` field of `/proc/<pid>/status` (Linux; `pid` may be `self`), e.g.
/// `VmRSS` (resident memory) or `VmHWM` (its peak), in KiB.
///
/// ```
/// let rss = kanade_agent::process_status_kib("self", "VmRSS");
/// assert!(cfg!(not(target_os = "linux")) || rss.is_some_and(|kib| kib > 0));
/// ```
pub fn process_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_lines_become_events_and_bad_lines_are_counted() {
        let now = Utc::now();
        let stdout = concat!(
            "{\"kind\":\"logon\",\"payload\":{\"user\":\"ann\"},\"pc_id\":\"spoofed\"}\n",
            "\n",
            "not json\n",
            "{\"no_kind\":1}\n",
            "{\"kind\":\"power_off\",\"at\":\"2026-06-01T09:00:00Z\",\"source\":\"eventlog\",\"event_record_id\":7}\n",
            "{\"kind\":\"x\",\"at\":\"yesterday\"}\n",
        );
        let (events, bad) = parse_emitted_events(stdout, "pc-1", "job", now);
        assert_eq!(bad, 3);
        assert_eq!(events.len(), 2);
        assert_eq!(
            (
                events[0].pc_id.as_str(),
                events[0].kind.as_str(),
                events[0].at
            ),
            ("pc-1", "logon", now)
        );
        assert_eq!(events[0].source, "job");
        assert_eq!(events[0].payload["user"], "ann");
        assert_eq!(
            (events[1].source.as_str(), events[1].event_record_id),
            ("eventlog", Some(7))
        );
    }

    #[test]
    fn inventory_describes_this_host() {
        let inventory = collect_hw_inventory("pc-1", Utc::now());
        assert_eq!(inventory.pc_id, "pc-1");
        assert!(inventory.cpu_cores.unwrap_or(0) >= 1);
        assert!(inventory.memory_bytes.unwrap_or(0) > 0);
    }
}
