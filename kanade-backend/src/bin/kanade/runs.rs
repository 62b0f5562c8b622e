//! Executions from the CLI: `exec` (with exit codes a script can rely
//! on), `results`, `executions` and `kill`.
//!
//! `kanade exec` exits with
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | every target answered and succeeded (exit 0) |
//! | 1 | a target failed, timed out, was killed or skipped its run (a gate: revoked, pinned, late, …), or a rollout halted or was aborted |
//! | 2 | usage error, or nothing was targeted |
//! | 3 | not every target answered within `--wait` |
//! | 4 | the execution awaits approvals: nothing ran yet |
//!
//! (as Salt's `--retcode-passthrough` or Ansible's failed-host exit
//! codes); `--no-wait` exits 0 once the command is out (2 if nothing was
//! targeted, 4 if it awaits approvals).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kanade_backend::db::{ExecutionFilter, ExecutionRow, ResultRow};
use kanade_backend::http::ExecRequest;
use kanade_backend::manifest::Target;
use kanade_backend::rollout::spec::RolloutSpec;
use kanade_backend::RolloutStatus;

use crate::api::Api;
use crate::print;

/// Every target answered and succeeded.
pub const EXIT_ALL_SUCCEEDED: u8 = 0;
/// Some target failed, timed out, was killed or skipped.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Nothing targeted (clap uses 2 for usage errors too).
pub const EXIT_NOTHING_TARGETED: u8 = 2;
/// Not all targets answered in time.
pub const EXIT_NOT_ALL_ANSWERED: u8 = 3;
/// Awaiting approvals.
pub const EXIT_AWAITING_APPROVAL: u8 = 4;

/// The exit code for an execution as it stands after waiting (pure).
pub fn exec_exit_code(execution: &ExecutionRow) -> u8 {
    let answered = execution.succeeded + execution.failed + execution.skipped;
    if execution.status == kanade_backend::db::AWAITING_APPROVAL {
        EXIT_AWAITING_APPROVAL
    } else if execution.targeted == 0 {
        EXIT_NOTHING_TARGETED
    } else if matches!(
        execution.status.as_str(),
        "cancelled" | "halted" | "aborted"
    ) || execution.failed > 0
        || execution.skipped > 0
    {
        EXIT_SOME_FAILED
    } else if answered < execution.targeted {
        EXIT_NOT_ALL_ANSWERED
    } else {
        EXIT_ALL_SUCCEEDED
    }
}

/// `kanade exec`.
pub fn exec(
    api: &Api,
    json: bool,
    job: &str,
    target: Target,
    rollout: Option<RolloutSpec>,
    no_wait: bool,
    wait: Duration,
) -> Result<ExitCode, String> {
    let is_rollout = rollout.is_some();
    let request = ExecRequest {
        all: target.all,
        groups: target.groups,
        pcs: target.pcs,
        rollout,
    };
    let execution: ExecutionRow = api.post(&format!("/api/jobs/{job}/exec"), &request)?;
    if execution.status == kanade_backend::db::AWAITING_APPROVAL {
        print(json, &execution, || {
            println!(
                "execution {} awaits approval: nothing runs until approvers say yes (kanade approvals; kanade approve {})",
                execution.exec_id, execution.exec_id
            )
        })?;
        return Ok(ExitCode::from(EXIT_AWAITING_APPROVAL));
    }
    if execution.targeted == 0 {
        print(json, &execution, || {
            println!(
                "execution {}: nothing targeted (no online agent matches; name pcs with --pcs to target them anyway)",
                execution.exec_id
            )
        })?;
        return Ok(ExitCode::from(EXIT_NOTHING_TARGETED));
    }
    if no_wait {
        print(json, &execution, || {
            println!(
                "execution {} targets {} agents",
                execution.exec_id, execution.targeted
            )
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = execution.exec_id.clone();
    let (finished, rollout) = if is_rollout {
        let (row, status) = wait_for_rollout(api, &id, wait)?;
        (row, Some(status))
    } else {
        (
            wait_for_execution(api, &id, execution.targeted, wait)?,
            None,
        )
    };
    let rows: Vec<ResultRow> = api.get(&format!("/api/executions/{id}/results"))?;
    let code = exec_exit_code(&finished);
    print(json, &rows, || {
        summary(&finished);
        if let Some(status) = &rollout {
            crate::rollouts::describe(status);
        }
        if code == EXIT_NOT_ALL_ANSWERED {
            println!(
                "not every target answered within {}",
                humantime::format_duration(wait)
            );
        }
        results_table(&rows);
    })?;
    Ok(ExitCode::from(code))
}

/// Longest a single long-poll asks the backend to hold (it caps at 60 s).
const HOLD: Duration = Duration::from_secs(25);

/// The execution once it differs from `after` (a fingerprint) or `limit`
/// passed: the backend holds the request and answers when a result or a
/// status change comes in — no timer here.
fn next_change(
    api: &Api,
    id: &str,
    after: Option<&str>,
    limit: Duration,
) -> Result<ExecutionRow, String> {
    match after {
        None => api.get(&format!("/api/executions/{id}")),
        Some(after) => {
            let hold = limit.min(HOLD).max(Duration::from_millis(1));
            api.get(&format!(
                "/api/executions/{id}?after={after}&wait={}ms",
                hold.as_millis()
            ))
        }
    }
}

/// Follows an execution with a progress bar that moves with each result
/// until it is over or `wait` passed.
fn wait_for_execution(
    api: &Api,
    id: &str,
    targeted: i64,
    wait: Duration,
) -> Result<ExecutionRow, String> {
    let bar = indicatif::ProgressBar::new(targeted.max(0) as u64);
    let started = Instant::now();
    let mut after: Option<String> = None;
    let finished = loop {
        let left = wait.saturating_sub(started.elapsed());
        let current = next_change(api, id, after.as_deref(), left)?;
        let done = current.succeeded + current.failed + current.skipped;
        bar.set_length(current.targeted.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        let over = kanade_backend::finished_status(&current.status).is_some()
            || matches!(current.status.as_str(), "halted" | "aborted");
        if over || started.elapsed() >= wait {
            break current;
        }
        after = Some(current.fingerprint());
    };
    bar.finish_and_clear();
    Ok(finished)
}

/// Polls a rollout with a progress bar per wave until it completed,
/// halted (and its runs in flight finished) or was aborted, or `wait`
/// passed.
fn wait_for_rollout(
    api: &Api,
    id: &str,
    wait: Duration,
) -> Result<(ExecutionRow, RolloutStatus), String> {
    let started = Instant::now();
    let mut status: RolloutStatus = api.get(&format!("/api/executions/{id}/rollout"))?;
    let bars = crate::rollouts::WaveBars::new(&status);
    let mut after: Option<String> = None;
    loop {
        bars.update(&status);
        let in_flight: i64 = status.waves.iter().map(|w| w.counts.in_flight).sum();
        let over = match status.rollout.state.as_str() {
            "completed" | "aborted" => true,
            "halted" => in_flight == 0,
            _ => false,
        };
        if over || started.elapsed() >= wait {
            break;
        }
        // Woken by the next result or status change of the execution.
        let left = wait.saturating_sub(started.elapsed());
        let row = next_change(api, id, after.as_deref(), left)?;
        after = Some(row.fingerprint());
        status = api.get(&format!("/api/executions/{id}/rollout"))?;
    }
    bars.finish();
    let row: ExecutionRow = api.get(&format!("/api/executions/{id}"))?;
    Ok((row, status))
}

/// The one-line state of an execution.
fn summary(execution: &ExecutionRow) {
    let late = if execution.late_targets > 0 {
        format!(
            " ({} answered without being counted at first)",
            execution.late_targets
        )
    } else {
        String::new()
    };
    println!(
        "execution {} ({} {}): {} — {} succeeded, {} failed, {} skipped of {} targeted{late}",
        execution.exec_id,
        execution.job_id,
        execution.version,
        execution.status,
        execution.succeeded,
        execution.failed,
        execution.skipped,
        execution.targeted
    );
}

/// `kanade results EXEC --follow`: each result as it is stored (a line
/// each, or a JSON object per line with `--json`), until the execution is
/// over; then its summary. Woken by the backend, no polling timer.
pub fn follow(api: &Api, json: bool, exec: &str) -> Result<ExitCode, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    if !json {
        results_header();
    }
    loop {
        let current = next_change(api, exec, after.as_deref(), HOLD)?;
        let rows: Vec<ResultRow> = api.get(&format!("/api/executions/{exec}/results"))?;
        for row in rows.iter().filter(|r| seen.insert(r.result_id.clone())) {
            if json {
                println!("{}", serde_json::to_string(row).map_err(|e| e.to_string())?);
            } else {
                result_line(row);
            }
        }
        let over = kanade_backend::finished_status(&current.status).is_some()
            || matches!(current.status.as_str(), "halted" | "aborted");
        if over {
            if !json {
                summary(&current);
            }
            return Ok(ExitCode::SUCCESS);
        }
        after = Some(current.fingerprint());
    }
}

/// `kanade results EXEC`: the execution's state, then its results.
pub fn results(api: &Api, json: bool, exec: &str) -> Result<ExitCode, String> {
    let execution: ExecutionRow = api.get(&format!("/api/executions/{exec}"))?;
    let rows: Vec<ResultRow> = api.get(&format!("/api/executions/{exec}/results"))?;
    print(json, &rows, || {
        summary(&execution);
        if rows.is_empty() {
            println!("no results yet");
        } else {
            results_table(&rows);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `kanade executions`: newest first, filtered.
pub fn list(api: &Api, json: bool, filter: &ExecutionFilter) -> Result<ExitCode, String> {
    let mut query = Vec::new();
    for (key, value) in [
        ("job", &filter.job),
        ("schedule", &filter.schedule),
        ("status", &filter.status),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", urlencoding(value)));
        }
    }
    if let Some(limit) = filter.limit {
        query.push(format!("limit={limit}"));
    }
    let path = if query.is_empty() {
        "/api/executions".to_owned()
    } else {
        format!("/api/executions?{}", query.join("&"))
    };
    let rows: Vec<ExecutionRow> = api.get(&path)?;
    print(json, &rows, || {
        println!(
            "{:<38} {:<20} {:<10} {:<18} {:>8} {:>4} {:>4} {:>4}  created",
            "execution", "job", "version", "status", "targeted", "ok", "fail", "skip"
        );
        for e in &rows {
            println!(
                "{:<38} {:<20} {:<10} {:<18} {:>8} {:>4} {:>4} {:>4}  {}",
                e.exec_id,
                e.job_id,
                e.version,
                e.status,
                e.targeted,
                e.succeeded,
                e.failed,
                e.skipped,
                e.created_at
            );
        }
        if rows.is_empty() {
            println!("(no executions match)");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value (ids are safe tokens; statuses too, but a
/// typo should not break the URL).
pub(crate) fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `kanade kill EXEC`.
pub fn kill(api: &Api, json: bool, exec: &str) -> Result<ExitCode, String> {
    let answer: serde_json::Value = api.post(&format!("/api/executions/{exec}/kill"), &())?;
    print(json, &answer, || {
        if answer["killed"] == true {
            println!("execution {exec} killed: running copies are stopped, agents that have not started it never will");
        } else {
            println!(
                "execution {exec} had already finished ({}); its status is unchanged",
                answer["status"].as_str().unwrap_or("?")
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The results as a table.
pub fn results_table(rows: &[ResultRow]) {
    results_header();
    for r in rows {
        result_line(r);
    }
}

fn results_header() {
    println!(
        "{:<16} {:>5} {:>8} {:>8}  output",
        "pc", "exit", "skipped", "attempts"
    );
}

/// One result as a table line (output on one line, cut at 60 characters).
fn result_line(r: &ResultRow) {
    let output = if r.stdout.trim().is_empty() {
        &r.stderr
    } else {
        &r.stdout
    };
    let mut line = output.trim().replace('\n', " | ");
    if line.chars().count() > 60 {
        line = line.chars().take(57).collect::<String>() + "...";
    }
    println!(
        "{:<16} {:>5} {:>8} {:>8}  {line}",
        r.pc_id, r.exit_code, r.skipped, r.attempts
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(status: &str, targeted: i64, ok: i64, failed: i64, skipped: i64) -> ExecutionRow {
        ExecutionRow {
            exec_id: "e".into(),
            job_id: "j".into(),
            version: "1".into(),
            request_id: "r".into(),
            target: "{}".into(),
            targeted,
            status: status.into(),
            created_at: String::new(),
            started: ok + failed,
            succeeded: ok,
            failed,
            skipped,
            reap_after_secs: 0,
            late_targets: 0,
            schedule_id: None,
        }
    }

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(exec_exit_code(&execution("completed", 2, 2, 0, 0)), 0);
        assert_eq!(exec_exit_code(&execution("completed", 2, 1, 1, 0)), 1);
        assert_eq!(exec_exit_code(&execution("completed", 2, 1, 0, 1)), 1);
        assert_eq!(exec_exit_code(&execution("cancelled", 2, 0, 2, 0)), 1);
        assert_eq!(exec_exit_code(&execution("completed", 0, 0, 0, 0)), 2);
        assert_eq!(exec_exit_code(&execution("running", 3, 2, 0, 0)), 3);
        assert_eq!(exec_exit_code(&execution("running", 3, 1, 1, 0)), 1);
        assert_eq!(
            exec_exit_code(&execution("awaiting_approval", 3, 0, 0, 0)),
            4
        );
        assert_eq!(urlencoding("a b&c"), "a%20b%26c");
    }
}
