//! `kanade`: the operator CLI, talking to the backend's HTTP API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kanade_backend::db::ExecutionFilter;
use kanade_backend::http::{JobUpload, PinRequest, ScheduleUpload};
use kanade_backend::manifest::{Job, Schedule, Target};
use serde::Serialize;

mod agent_updates;
mod api;
mod credentials;
mod inventory;
mod rollouts;
mod runs;
mod security;

use api::Api;

/// The kanade operator CLI: apply jobs and schedules, run them across the
/// fleet, follow executions, kill, revoke, pin, freeze, approve — over the
/// backend's HTTP API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The backend's API.
    #[arg(
        long,
        env = "KANADE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// CA certificate (PEM) to trust for an https:// backend.
    #[arg(long, env = "KANADE_CA", global = true)]
    ca: Option<PathBuf>,
    /// Bearer token (else KANADE_TOKEN, else the file `kanade login` wrote).
    #[arg(long, env = "KANADE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Jobs.
    Job {
        #[command(subcommand)]
        action: JobCmd,
    },
    /// Schedules.
    Schedule {
        #[command(subcommand)]
        action: ScheduleCmd,
    },
    /// Run a job now and wait for its results. Exit codes: 0 all
    /// succeeded; 1 some failed, timed out, were killed or skipped; 2
    /// nothing targeted (or usage); 3 not all answered within --wait; 4
    /// awaiting approvals.
    Exec {
        /// Job id.
        job: String,
        /// Every agent.
        #[arg(long)]
        all: bool,
        /// Groups (comma-separated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Pcs (comma-separated).
        #[arg(long, value_delimiter = ',')]
        pcs: Vec<String>,
        /// Return at once instead of waiting for the results.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for results.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// A rollout that stops itself: batches, a window, a canary
        /// group, an error budget.
        #[command(flatten)]
        rollout: rollouts::RolloutArgs,
    },
    /// Inventory from `inventory:` jobs: facts and tables; `history JOB`.
    Inventory(inventory::InventoryArgs),
    /// Compliance from `check:` jobs: the fleet summary, or a check's pcs.
    Checks(inventory::ChecksArgs),
    /// A rollout's status, and pause, resume, abort.
    Rollout {
        #[command(subcommand)]
        action: rollouts::RolloutCmd,
    },
    /// An execution's state and results.
    Results {
        /// Execution id.
        exec: String,
        /// Print each result as it arrives until the execution is over.
        #[arg(long)]
        follow: bool,
    },
    /// Executions, newest first.
    Executions {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// Only those this schedule fired.
        #[arg(long)]
        schedule: Option<String>,
        /// Only those in this status (pending, running, completed,
        /// cancelled, failed, awaiting_approval).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value = "50")]
        limit: usize,
    },
    /// Known agents (`--versions`: how many run each version, and
    /// quarantined versions).
    Agents {
        /// The fleet's version spread instead of the agents.
        #[arg(long)]
        versions: bool,
    },
    /// Agent releases: publish a binary, roll agents out to a version.
    Agent {
        #[command(subcommand)]
        action: agent_updates::AgentCmd,
    },
    /// Revoke a job (agents skip it with 126).
    Revoke {
        /// Job id.
        job: String,
    },
    /// Let a revoked job run again.
    Activate {
        /// Job id.
        job: String,
    },
    /// Pin the version agents may run (others skip with 124) until
    /// `kanade unpin`; it must be a version that was applied.
    Pin {
        /// Job id.
        job: String,
        /// Version.
        version: String,
    },
    /// Clear a pin: the job's latest applied version runs again.
    Unpin {
        /// Job id.
        job: String,
    },
    /// Kill an execution: running copies stop, agents that have not
    /// started it never will (a finished one is left as it is).
    Kill {
        /// Execution id.
        exec: String,
    },
    /// Fleet-wide freeze of scheduled fires.
    Freeze {
        #[command(subcommand)]
        action: FreezeCmd,
    },
    /// Save a token for later commands (mode 0600). Without --token it is
    /// read from stdin, which keeps it out of the process list and history.
    Login {
        /// The token (`kanade-backend token create` or `kanade token create` printed it).
        #[arg(long)]
        token: Option<String>,
    },
    /// API tokens (admin).
    Token {
        #[command(subcommand)]
        action: security::TokenCmd,
    },
    /// The audit trail (admin): without a subcommand, the entries.
    Audit {
        #[command(subcommand)]
        action: Option<security::AuditCmd>,
        /// From this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only this actor.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Executions waiting for approvals.
    Approvals,
    /// Approve an execution (or, with --schedule, a schedule) waiting for approvals.
    Approve {
        /// Execution id.
        #[arg(required_unless_present = "schedule")]
        exec: Option<String>,
        /// A schedule id instead (its job's current version).
        #[arg(long, conflicts_with = "exec")]
        schedule: Option<String>,
    },
    /// Deny an execution (or, with --schedule, a schedule) waiting for approvals.
    Deny {
        /// Execution id.
        #[arg(required_unless_present = "schedule")]
        exec: Option<String>,
        /// A schedule id instead.
        #[arg(long, conflicts_with = "exec")]
        schedule: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobCmd {
    /// Upload a job manifest (YAML). A version is immutable: a changed job
    /// needs a new version.
    Apply {
        /// The manifest.
        #[arg(short, long)]
        file: PathBuf,
        /// Replace the content of a version applied before (audited).
        #[arg(long)]
        replace: bool,
    },
    /// List jobs.
    List,
}

#[derive(Debug, Subcommand)]
enum ScheduleCmd {
    /// Upload a schedule manifest (YAML).
    Apply {
        /// The manifest.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// List schedules.
    List,
    /// The next fire times.
    Preview {
        /// Schedule id.
        id: String,
        /// How many.
        #[arg(short, default_value = "5")]
        n: usize,
    },
    /// Turn a schedule on.
    Enable {
        /// Schedule id.
        id: String,
    },
    /// Turn a schedule off.
    Disable {
        /// Schedule id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum FreezeCmd {
    /// Stop scheduled fires fleet-wide (ad-hoc exec still works).
    Set {
        /// RFC 3339 end; without it the freeze lasts until cleared.
        #[arg(long)]
        until: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the freeze.
    Clear,
    /// Show the freeze.
    Status,
}

pub(crate) fn print<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce(),
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
        );
    } else {
        table();
    }
    Ok(())
}

fn script_files_next_to(
    manifest: &std::path::Path,
    yaml: &str,
) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    for line in yaml.lines() {
        if let Some(name) = line.trim().strip_prefix("script_file:") {
            let name = name.trim().trim_matches('"').trim_matches('\'');
            let path = manifest
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(name);
            // A missing file is reported by the backend (naming the line);
            // an unreadable encoding here, naming the file.
            if let Ok(bytes) = std::fs::read(&path) {
                files.insert(
                    name.to_owned(),
                    kanade_backend::manifest::decode_script_file(name, &bytes)?,
                );
            }
        }
    }
    Ok(files)
}

fn run(args: Args) -> Result<ExitCode, String> {
    if let Cmd::Login { token } = &args.command {
        let token = match token {
            Some(token) => token.clone(),
            None => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("reading the token from stdin: {e}"))?;
                line
            }
        };
        if token.trim().is_empty() {
            return Err("no token given: kanade login --token <token>, or on stdin".into());
        }
        security::login(&token)?;
        return Ok(ExitCode::SUCCESS);
    }
    let token = match args.token.clone() {
        Some(token) => Some(token),
        None => credentials::load()?,
    };
    let api = Api::new(&args.server, token, args.ca.as_deref())?;
    if let Cmd::Audit {
        action,
        since,
        actor,
    } = args.command
    {
        let action = action.unwrap_or(security::AuditCmd::List { since, actor });
        return security::audit(&api, args.json, action);
    }
    run_with(&api, args)
}

/// Commands whose exit code says how an execution went, then the rest
/// (exit 0 when they did what was asked).
fn run_with(api: &Api, args: Args) -> Result<ExitCode, String> {
    match args.command {
        Cmd::Exec {
            job,
            all,
            groups,
            pcs,
            no_wait,
            wait,
            rollout,
        } => runs::exec(
            api,
            args.json,
            &job,
            Target { all, groups, pcs },
            rollout.spec(),
            no_wait,
            wait,
        ),
        Cmd::Rollout { action } => rollouts::run(api, args.json, action),
        Cmd::Agent { action } => agent_updates::run(api, args.json, action),
        Cmd::Agents { versions: true } => agent_updates::versions(api, args.json),
        Cmd::Results { exec, follow } => {
            if follow {
                runs::follow(api, args.json, &exec)
            } else {
                runs::results(api, args.json, &exec)
            }
        }
        Cmd::Executions {
            job,
            schedule,
            status,
            limit,
        } => runs::list(
            api,
            args.json,
            &ExecutionFilter {
                job,
                schedule,
                status,
                limit: Some(limit),
            },
        ),
        Cmd::Kill { exec } => runs::kill(api, args.json, &exec),
        _ => run_other(api, args).map(|()| ExitCode::SUCCESS),
    }
}

fn run_other(api: &Api, args: Args) -> Result<(), String> {
    match args.command {
        Cmd::Login { .. } | Cmd::Audit { .. } => Ok(()),
        Cmd::Token { action } => security::token(api, args.json, action),
        Cmd::Approvals => security::approvals(api, args.json),
        Cmd::Inventory(inventory) => inventory::inventory(api, args.json, inventory),
        Cmd::Checks(checks) => inventory::checks(api, args.json, checks),
        Cmd::Approve { exec, schedule } => security::decide(api, args.json, exec, schedule, None),
        Cmd::Deny {
            exec,
            schedule,
            reason,
        } => security::decide(api, args.json, exec, schedule, Some(reason)),
        Cmd::Exec { .. }
        | Cmd::Results { .. }
        | Cmd::Executions { .. }
        | Cmd::Kill { .. }
        | Cmd::Agent { .. }
        | Cmd::Agents { versions: true }
        | Cmd::Rollout { .. } => Ok(()),
        Cmd::Job {
            action: JobCmd::Apply { file, replace },
        } => {
            let yaml =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let upload = JobUpload {
                script_files: script_files_next_to(&file, &yaml)?,
                yaml,
                replace,
            };
            let job: Job = api
                .post("/api/jobs", &upload)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let pins: Vec<kanade_backend::db::Pin> = api.get("/api/pins").unwrap_or_default();
            let pinned = pins
                .into_iter()
                .find(|p| p.job_id == job.id && p.version != job.version);
            print(args.json, &job, || {
                println!("applied job {} {}", job.id, job.version);
                if let Some(pin) = &pinned {
                    println!(
                        "job {} is pinned to {}: agents keep running it and skip {} (124) until `kanade pin {} {}` or `kanade unpin {}`",
                        job.id, pin.version, job.version, job.id, job.version, job.id
                    );
                }
            })
        }
        Cmd::Job {
            action: JobCmd::List,
        } => {
            let jobs: Vec<Job> = api.get("/api/jobs")?;
            print(args.json, &jobs, || {
                println!("{:<24} {:<10} {:<10} timeout", "id", "version", "shell");
                for j in &jobs {
                    println!(
                        "{:<24} {:<10} {:<10} {}",
                        j.id,
                        j.version,
                        format!("{:?}", j.execute.shell).to_lowercase(),
                        j.execute.timeout
                    );
                }
            })
        }
        Cmd::Schedule {
            action: ScheduleCmd::Apply { file },
        } => {
            let yaml =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let schedule: Schedule = api
                .post("/api/schedules", &ScheduleUpload { yaml })
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let waiting: Vec<kanade_backend::db::ScheduleApproval> =
                api.get("/api/schedule-approvals").unwrap_or_default();
            let awaits = waiting.iter().any(|w| w.schedule_id == schedule.id);
            print(args.json, &schedule, || {
                println!("applied schedule {} (job {})", schedule.id, schedule.job_id);
                if awaits {
                    println!(
                        "its job requires approval: it fires once approved (kanade approve --schedule {})",
                        schedule.id
                    );
                }
            })
        }
        Cmd::Schedule {
            action: ScheduleCmd::List,
        } => {
            let schedules: Vec<Schedule> = api.get("/api/schedules")?;
            print(args.json, &schedules, || {
                println!("{:<24} {:<24} enabled", "schedule", "job");
                for s in &schedules {
                    println!("{:<24} {:<24} {}", s.id, s.job_id, s.enabled);
                }
            })
        }
        Cmd::Schedule {
            action: ScheduleCmd::Preview { id, n },
        } => {
            let times: Vec<String> = api.get(&format!("/api/schedules/{id}/preview?n={n}"))?;
            print(args.json, &times, || {
                println!("next fire times of {id}:");
                for t in &times {
                    println!("  {t}");
                }
            })
        }
        Cmd::Schedule {
            action: ScheduleCmd::Enable { id },
        } => {
            let s: Schedule = api.post(&format!("/api/schedules/{id}/enable"), &())?;
            print(args.json, &s, || println!("schedule {} enabled", s.id))
        }
        Cmd::Schedule {
            action: ScheduleCmd::Disable { id },
        } => {
            let s: Schedule = api.post(&format!("/api/schedules/{id}/disable"), &())?;
            print(args.json, &s, || println!("schedule {} disabled", s.id))
        }
        Cmd::Freeze { action } => {
            let state: Option<kanade_backend::db::Freeze> = match action {
                FreezeCmd::Set { until, reason } => api.post(
                    "/api/freeze",
                    &kanade_backend::http::FreezeRequest { until, reason },
                )?,
                FreezeCmd::Clear => api.delete("/api/freeze")?,
                FreezeCmd::Status => api.get("/api/freeze")?,
            };
            print(args.json, &state, || match &state {
                None => println!("not frozen: schedules fire normally"),
                Some(f) => println!(
                    "frozen until {} ({})",
                    f.until.as_deref().unwrap_or("cleared"),
                    f.reason.as_deref().unwrap_or("no reason given")
                ),
            })
        }
        Cmd::Agents { versions: false } => agent_updates::list(api, args.json),
        Cmd::Revoke { job } => {
            let answer: serde_json::Value = api.post(&format!("/api/jobs/{job}/revoke"), &())?;
            print(args.json, &answer, || {
                println!("job {job} revoked: agents skip it (126) until `kanade activate {job}`")
            })
        }
        Cmd::Activate { job } => {
            let answer: serde_json::Value = api.post(&format!("/api/jobs/{job}/activate"), &())?;
            print(args.json, &answer, || {
                println!("job {job} active again: it runs where it is sent")
            })
        }
        Cmd::Unpin { job } => {
            let answer: serde_json::Value = api.post(&format!("/api/jobs/{job}/unpin"), &())?;
            print(args.json, &answer, || {
                println!(
                    "job {job} unpinned: {} runs",
                    answer["current"].as_str().unwrap_or("its latest version")
                )
            })
        }
        Cmd::Pin { job, version } => {
            let answer: serde_json::Value =
                api.post(&format!("/api/jobs/{job}/pin"), &PinRequest { version })?;
            print(args.json, &answer, || {
                println!(
                    "job {job} pinned to {}: agents skip other versions (124) until the pin is changed",
                    answer["pinned"].as_str().unwrap_or("?")
                )
            })
        }
    }
}

fn main() -> ExitCode {
    api::quiet_on_closed_stdout();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kanade: {e}");
            ExitCode::from(1)
        }
    }
}
