//! The security commands: `login`, `token`, `audit`, `approvals`,
//! `approve`, `deny`.

use std::process::ExitCode;

use clap::Subcommand;
use kanade_backend::db::{ApprovalRequest, ExecutionRow, ScheduleApproval, TokenRow};
use kanade_backend::http::{ApprovalDecision, TokenCreated};
use kanade_core::wire::AuditEvent;

use crate::api::Api;
use crate::print;
use crate::runs::urlencoding;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token (admin); prints the token alone on stdout (shown once).
    Create(kanade_backend::cli_args::TokenSpec),
    /// List tokens (admin).
    List,
    /// Revoke a token by name or id (admin).
    Revoke {
        /// Name or id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Show entries (admin).
    List {
        /// From this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only this actor.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Every entry as NDJSON on stdout (admin).
    Export,
    /// Recompute the hash chain; exit 1 naming the first bad entry (admin).
    Verify,
}

pub fn login(token: &str) -> Result<(), String> {
    let path = crate::credentials::save(token.trim())?;
    eprintln!("saved the token to {} (mode 0600)", path.display());
    Ok(())
}

pub fn token(api: &Api, json: bool, action: TokenCmd) -> Result<(), String> {
    match action {
        TokenCmd::Create(spec) => {
            let new = spec.new_token(chrono::Utc::now())?;
            let created: TokenCreated = api.post("/api/tokens", &new)?;
            if json {
                return print(true, &created, || {});
            }
            eprintln!(
                "created {} token {:?} (shown once; only its hash is stored)",
                created.row.role, created.row.name
            );
            println!("{}", created.token);
            Ok(())
        }
        TokenCmd::List => {
            let tokens: Vec<TokenRow> = api.get("/api/tokens")?;
            print(json, &tokens, || {
                println!(
                    "{:<20} {:<9} {:<8} {:<26} {:<26} scopes",
                    "name", "role", "revoked", "expires", "last used"
                );
                for t in &tokens {
                    println!(
                        "{:<20} {:<9} {:<8} {:<26} {:<26} {}",
                        t.name,
                        t.role,
                        t.revoked,
                        t.expires_at.as_deref().unwrap_or("never"),
                        t.last_used_at.as_deref().unwrap_or("never"),
                        serde_json::to_string(&t.scopes).unwrap_or_default()
                    );
                }
            })
        }
        TokenCmd::Revoke { name } => {
            let answer: serde_json::Value = api.delete(&format!("/api/tokens/{name}"))?;
            print(json, &answer, || println!("revoked {name}"))
        }
    }
}

pub fn audit(api: &Api, json: bool, action: AuditCmd) -> Result<ExitCode, String> {
    match action {
        AuditCmd::List { since, actor } => {
            let mut query = vec!["limit=1000".to_owned()];
            if let Some(since) = since {
                query.push(format!("since={}", urlencoding(&since)));
            }
            if let Some(actor) = actor {
                query.push(format!("actor={}", urlencoding(&actor)));
            }
            let entries: Vec<AuditEvent> = api.get(&format!("/api/audit?{}", query.join("&")))?;
            print(json, &entries, || {
                println!(
                    "{:>5} {:<25} {:<18} {:<18} {:<16} {:<14} source",
                    "seq", "at", "actor", "action", "target", "outcome"
                );
                for e in &entries {
                    let source = e
                        .source
                        .as_ref()
                        .map(|s| format!("{} {}", s.kind, s.ip.as_deref().unwrap_or("-")))
                        .unwrap_or_default();
                    println!(
                        "{:>5} {:<25} {:<18} {:<18} {:<16} {:<14} {source}",
                        e.seq.unwrap_or_default(),
                        e.at.to_rfc3339(),
                        e.actor,
                        e.action,
                        e.target.as_deref().unwrap_or("-"),
                        e.outcome.as_deref().unwrap_or("-"),
                    );
                }
            })?;
        }
        AuditCmd::Export => {
            let entries: Vec<AuditEvent> = api.get("/api/audit?limit=0")?;
            for entry in &entries {
                println!(
                    "{}",
                    serde_json::to_string(entry).map_err(|e| e.to_string())?
                );
            }
        }
        AuditCmd::Verify => {
            let verdict: serde_json::Value = api.get("/api/audit/verify")?;
            print(json, &verdict, || {
                if verdict["ok"] == true {
                    println!(
                        "audit trail intact: {} entries, last hash {}",
                        verdict["entries"],
                        verdict["last_hash"].as_str().unwrap_or("")
                    );
                } else {
                    println!(
                        "audit trail BROKEN at seq {}: {}",
                        verdict["seq"],
                        verdict["reason"].as_str().unwrap_or("")
                    );
                }
            })?;
            if verdict["ok"] != true {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn approvals(api: &Api, json: bool) -> Result<(), String> {
    let pending: Vec<ApprovalRequest> = api.get("/api/approvals")?;
    let schedules: Vec<ScheduleApproval> = api.get("/api/schedule-approvals")?;
    if json {
        return print(
            true,
            &serde_json::json!({"executions": pending, "schedules": schedules}),
            || {},
        );
    }
    if !schedules.is_empty() {
        println!(
            "{:<24} {:<12} {:<14} {:>9} {:<9} expires",
            "schedule", "version", "requested by", "approvals", "role"
        );
        for s in &schedules {
            println!(
                "{:<24} {:<12} {:<14} {:>4} of {:<2} {:<9} {}",
                s.schedule_id,
                s.version,
                s.requested_by,
                s.approvers.len(),
                s.rule.approvals,
                s.rule.role,
                s.rule.expires_at.to_rfc3339()
            );
        }
        println!();
    }
    print(false, &pending, || {
        println!(
            "{:<38} {:<16} {:<14} {:>9} {:<9} expires",
            "execution", "job", "requested by", "approvals", "role"
        );
        for p in &pending {
            println!(
                "{:<38} {:<16} {:<14} {:>4} of {:<2} {:<9} {}",
                p.execution.exec_id,
                p.execution.job_id,
                p.requested_by,
                p.approvers.len(),
                p.rule.approvals,
                p.rule.role,
                p.rule.expires_at.to_rfc3339()
            );
        }
    })
}

pub fn decide(
    api: &Api,
    json: bool,
    exec: Option<String>,
    schedule: Option<String>,
    deny: Option<String>,
) -> Result<(), String> {
    if let Some(schedule) = schedule {
        let verb = if deny.is_some() { "deny" } else { "approve" };
        let request: ScheduleApproval = match &deny {
            None => api.post(&format!("/api/schedules/{schedule}/{verb}"), &())?,
            Some(reason) => api.post(
                &format!("/api/schedules/{schedule}/{verb}"),
                &ApprovalDecision {
                    reason: Some(reason.clone()),
                },
            )?,
        };
        return print(json, &request, || {
            println!(
                "schedule {} (job version {}): {} ({} of {} approvals)",
                request.schedule_id,
                request.version,
                request.status,
                request.approvers.len(),
                request.rule.approvals
            )
        });
    }
    let exec = exec.ok_or("name an execution, or --schedule")?;
    let row: ExecutionRow = match deny {
        None => api.post(&format!("/api/executions/{exec}/approve"), &())?,
        Some(reason) => api.post(
            &format!("/api/executions/{exec}/deny"),
            &ApprovalDecision {
                reason: Some(reason),
            },
        )?,
    };
    print(json, &row, || {
        println!("execution {}: {}", row.exec_id, row.status)
    })
}
