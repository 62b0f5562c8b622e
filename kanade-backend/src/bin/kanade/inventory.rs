//! `kanade inventory JOB`, `kanade inventory history JOB` and `kanade
//! checks [NAME]`: the tables the backend projects from `inventory:` and
//! `check:` jobs (`kanade_backend::inventory`).

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use kanade_backend::db::{CheckState, CheckSummary, InventoryChange};
use kanade_backend::http::InventoryAnswer;
use serde_json::Value;

use crate::api::Api;
use crate::print;
use crate::runs::urlencoding;

/// `kanade inventory`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InventoryArgs {
    #[command(subcommand)]
    history: Option<InventoryCmd>,
    /// The job whose inventory to show.
    job: Option<String>,
    /// Only this pc.
    #[arg(long)]
    pc: Option<String>,
    /// Only this exploded table.
    #[arg(long)]
    table: Option<String>,
    /// FIELD=VALUE: with --table, only rows whose column has this value;
    /// without, only pcs whose fact has it.
    #[arg(long = "where")]
    field_equals: Option<String>,
}

/// `kanade inventory history`.
#[derive(Debug, Clone, Subcommand)]
pub enum InventoryCmd {
    /// What changed in a job's inventory, oldest first.
    History {
        /// The job.
        job: String,
        /// Only this pc.
        #[arg(long)]
        pc: Option<String>,
        /// Only changes at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
}

/// `kanade checks`.
#[derive(Debug, Clone, Args)]
pub struct ChecksArgs {
    /// One check: its pcs (without: the fleet summary of every check).
    name: Option<String>,
    /// Only the pcs failing it.
    #[arg(long, requires = "name")]
    failing: bool,
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencoding(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => printable(s),
        Value::Null => String::new(),
        other => printable(&other.to_string()),
    }
}

/// What an agent reported, safe for a terminal: control characters
/// (escape sequences) become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Prints rows of JSON objects as a table with `columns` (pc first).
fn table(rows: &[(String, &serde_json::Map<String, Value>)]) {
    let columns: BTreeSet<&String> = rows.iter().flat_map(|(_, r)| r.keys()).collect();
    let mut lines = vec![std::iter::once("pc".to_owned())
        .chain(columns.iter().map(|c| (*c).clone()))
        .collect::<Vec<_>>()];
    for (pc, row) in rows {
        lines.push(
            std::iter::once(pc.clone())
                .chain(
                    columns
                        .iter()
                        .map(|c| row.get(*c).map(text).unwrap_or_default()),
                )
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// An agent's hardware in a few characters: `8 cpu 15.5 GiB`.
pub fn hardware_text(hardware: Option<&kanade_core::wire::HwInventory>) -> String {
    let Some(hw) = hardware else {
        return "-".into();
    };
    let cpus = hw.cpu_cores.map(|n| format!("{n} cpu")).unwrap_or_default();
    let memory = hw
        .memory_bytes
        .map(|b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)))
        .unwrap_or_default();
    format!("{cpus} {memory}").trim().to_owned()
}

/// `kanade inventory …`.
pub fn inventory(api: &Api, json: bool, args: InventoryArgs) -> Result<(), String> {
    if let Some(InventoryCmd::History { job, pc, since }) = args.history {
        let changes: Vec<InventoryChange> = api.get(&format!(
            "/api/inventory/{}/history{}",
            urlencoding(&job),
            query(&[("pc", &pc), ("since", &since)])
        ))?;
        return print(json, &changes, || {
            for c in &changes {
                let what = c.table.as_deref().map_or_else(
                    || format!("{} {}", c.change, c.key),
                    |t| format!("{t} {} {}", c.change, c.key),
                );
                let show = |v: &Option<Value>| v.as_ref().map(text).unwrap_or_else(|| "-".into());
                println!(
                    "{}  {}  {}: {} → {}",
                    c.at,
                    c.pc_id,
                    printable(&what),
                    show(&c.before),
                    show(&c.after)
                );
            }
            if changes.is_empty() {
                println!("no changes recorded");
            }
        });
    }
    let job = args.job.ok_or("name a job: kanade inventory JOB")?;
    let answer: InventoryAnswer = api.get(&format!(
        "/api/inventory/{}{}",
        urlencoding(&job),
        query(&[
            ("pc", &args.pc),
            ("table", &args.table),
            ("where", &args.field_equals)
        ])
    ))?;
    print(json, &answer, || {
        if !answer.facts.is_empty() {
            let rows: Vec<_> = answer
                .facts
                .iter()
                .filter_map(|f| f.facts.as_object().map(|o| (f.pc_id.clone(), o)))
                .collect();
            table(&rows);
        }
        let tables: BTreeSet<&str> = answer.rows.iter().map(|r| r.table.as_str()).collect();
        for name in tables {
            println!("\n{name}:");
            let rows: Vec<_> = answer
                .rows
                .iter()
                .filter(|r| r.table == name)
                .filter_map(|r| r.row.as_object().map(|o| (r.pc_id.clone(), o)))
                .collect();
            table(&rows);
        }
        if answer.facts.is_empty() && answer.rows.is_empty() {
            println!("no inventory for {job} yet");
        }
        for skip in &answer.skipped {
            println!(
                "not projected: {} on {} (version {}): {}",
                skip.result_id,
                skip.pc_id,
                skip.version,
                printable(&skip.reason)
            );
        }
    })
}

/// `kanade checks [NAME] [--failing]`: the fleet summary (of every
/// check, or of NAME followed by its pcs; only the failing ones with
/// `--failing`).
pub fn checks(api: &Api, json: bool, args: ChecksArgs) -> Result<(), String> {
    let summary: Vec<CheckSummary> =
        api.get(&format!("/api/checks{}", query(&[("name", &args.name)])))?;
    let print_summary = |summary: &[CheckSummary]| {
        println!(
            "{:<24} {:>6} {:>6} {:>6} {:>8} {:>10}",
            "check", "pass", "warn", "fail", "unknown", "never ran"
        );
        for s in summary {
            println!(
                "{:<24} {:>6} {:>6} {:>6} {:>8} {:>10}",
                s.check, s.pass, s.warn, s.fail, s.unknown, s.never_ran
            );
        }
    };
    let Some(name) = args.name else {
        return print(json, &summary, || print_summary(&summary));
    };
    let failing = if args.failing { "?failing=true" } else { "" };
    let states: Vec<CheckState> =
        api.get(&format!("/api/checks/{}{failing}", urlencoding(&name)))?;
    print(json, &states, || {
        print_summary(&summary);
        println!("\n{:<16} {:<8} {:<32} detail", "pc", "status", "since");
        for s in &states {
            println!(
                "{:<16} {:<8} {:<32} {}",
                s.pc_id,
                s.status,
                s.since,
                printable(&s.detail)
            );
        }
        if states.is_empty() {
            let what = if args.failing { "failing" } else { "reporting" };
            println!("no pc {what} {name}");
        }
    })
}
