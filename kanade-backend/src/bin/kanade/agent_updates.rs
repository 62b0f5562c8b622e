//! Updating agents from the CLI: `kanade agent publish | rollout |
//! releases` and `kanade agents --versions` (see
//! `kanade_core::policy::release` for what an agent does with them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kanade_backend::db::AgentRow;
use kanade_backend::{ReleaseListing, VersionSpread};
use kanade_core::policy::release::ReleaseManifest;

use crate::api::Api;
use crate::print;

/// `kanade agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Upload an agent binary as release VERSION (signed by the backend's
    /// signing key; agents install only releases their key ring verifies).
    Publish {
        /// The version the binary reports.
        #[arg(long)]
        version: String,
        /// The binary.
        #[arg(long)]
        file: PathBuf,
        /// `<os>-<arch>` it runs on (default: this machine's, e.g.
        /// linux-x86_64).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Set the version agents should run (`target_version` in the agent
    /// config: global, per group or per pc).
    Rollout {
        /// The version (published first).
        version: String,
        /// Every agent.
        #[arg(long, conflicts_with_all = ["groups", "pcs"])]
        all: bool,
        /// These groups (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// These pcs (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        pcs: Vec<String>,
        /// Each agent waits a random time up to this before installing
        /// (default 10m).
        #[arg(long)]
        jitter: Option<String>,
        /// Halt once this many hosts quarantined the version (each scope
        /// gets its previous target back).
        #[arg(long)]
        max_errors: Option<u32>,
    },
    /// The current agent rollout: rolling or halted, and why.
    Status,
    /// The published releases.
    Releases,
}

/// Runs `kanade agent …`.
pub fn run(api: &Api, json: bool, action: AgentCmd) -> Result<ExitCode, String> {
    match action {
        AgentCmd::Publish {
            version,
            file,
            platform,
        } => {
            let body =
                std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let mut path = format!(
                "/api/agent-releases?version={}",
                crate::runs::urlencoding(&version)
            );
            if let Some(platform) = &platform {
                path.push_str(&format!("&platform={}", crate::runs::urlencoding(platform)));
            }
            let manifest: ReleaseManifest = api.post_bytes(&path, &body)?;
            print(json, &manifest, || {
                println!(
                    "published agent {} for {}: {} bytes, sha256 {}",
                    manifest.version, manifest.platform, manifest.size, manifest.sha256
                );
            })?;
        }
        AgentCmd::Rollout {
            version,
            all,
            groups,
            pcs,
            jitter,
            max_errors,
        } => {
            if !all && groups.is_empty() && pcs.is_empty() {
                return Err("say which agents: --all, --groups G or --pcs P".into());
            }
            let request = serde_json::json!({
                "version": version,
                "all": all,
                "groups": groups,
                "pcs": pcs,
                "jitter": jitter,
                "max_errors": max_errors,
            });
            let answer: serde_json::Value = api.post("/api/agent-rollout", &request)?;
            print(json, &answer, || {
                println!(
                    "agents roll out to {version} ({})",
                    answer["keys"]
                        .as_array()
                        .map(|keys| keys
                            .iter()
                            .filter_map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
            })?;
        }
        AgentCmd::Status => {
            let rollout: Option<kanade_backend::db::AgentRolloutRow> =
                api.get("/api/agent-rollout")?;
            print(json, &rollout, || match &rollout {
                None => println!("no agent rollout yet"),
                Some(r) => println!(
                    "agent rollout to {} ({}, set {}){}",
                    r.version,
                    r.status,
                    r.created_at,
                    r.reason
                        .as_deref()
                        .map(|why| format!(": {why}"))
                        .unwrap_or_default()
                ),
            })?;
        }
        AgentCmd::Releases => {
            let releases: Vec<ReleaseListing> = api.get("/api/agent-releases")?;
            print(json, &releases, || {
                println!(
                    "{:<12} {:<16} {:>12} {:<16} sha256",
                    "version", "platform", "bytes", "signed by"
                );
                for r in &releases {
                    println!(
                        "{:<12} {:<16} {:>12} {:<16} {}",
                        r.manifest.version,
                        r.manifest.platform,
                        r.manifest.size,
                        r.signed_by,
                        r.manifest.sha256
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kanade agents --versions`: agents per version, and quarantines.
pub fn versions(api: &Api, json: bool) -> Result<ExitCode, String> {
    let spread: VersionSpread = api.get("/api/agents/versions")?;
    print(json, &spread, || {
        println!("{:<16} agents", "version");
        for (version, count) in &spread.versions {
            println!("{version:<16} {count}");
        }
        for (version, pcs) in &spread.quarantined {
            println!("quarantined {version} on {}", pcs.join(", "));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `kanade agents`: every agent, online or not, with its version, OS,
/// clock offset, hardware and last heartbeat.
pub fn list(api: &Api, json: bool) -> Result<(), String> {
    let agents: Vec<AgentRow> = api.get("/api/agents")?;
    print(json, &agents, || {
        println!(
            "{:<16} {:<8} {:<10} {:<8} {:<18} {:<16} last seen (backend clock)",
            "pc", "online", "version", "os", "clock offset", "hardware"
        );
        for a in &agents {
            println!(
                "{:<16} {:<8} {:<10} {:<8} {:<18} {:<16} {}",
                a.pc_id,
                a.online,
                a.agent_version,
                a.os_family.clone().unwrap_or_default(),
                clock_offset_text(a),
                crate::inventory::hardware_text(a.hardware.as_ref()),
                a.last_seen
            );
        }
    })
}

/// An agent's clock offset for `kanade agents`: `+600.0s SKEWED` (ahead),
/// `-0.2s`, or `?` when unknown.
fn clock_offset_text(agent: &AgentRow) -> String {
    match agent.clock_offset_ms {
        None => "?".to_owned(),
        Some(ms) => {
            let text = format!("{:+.1}s", ms as f64 / 1000.0);
            if agent.clock_skewed {
                format!("{text} SKEWED")
            } else {
                text
            }
        }
    }
}
