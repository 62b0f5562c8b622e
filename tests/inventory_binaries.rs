//! Inventory over real binaries on a real nats-server: the `kanade-backend`
//! binary, three `kanade-agent` processes and the `kanade` CLI. The
//! example package inventory fills `packages` with one row per package per
//! pc; a variant that no longer lists one package records its removal on
//! every pc; the disk-usage check gives each pc a state; `kanade agents`
//! shows their hardware.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use kanade::nats::test_server::NatsServer;

mod common;
use common::{wait_until, workspace_binary, KillOnDrop};

#[test]
fn the_package_inventory_over_nats_fills_and_tracks_the_table() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cli, _backend) = common::backend_binary(&nats.url(), dir.path(), "operator");
    let _agents: Vec<KillOnDrop> = ["pc-1", "pc-2", "pc-3"]
        .iter()
        .map(|pc| {
            KillOnDrop(
                Command::new(workspace_binary("kanade-agent"))
                    .args(["--transport", &nats.url(), "--pc-id", pc])
                    .arg("--state-dir")
                    .arg(dir.path().join(pc))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until("three agents with their hardware", || {
        let agents = cli.json(&["agents"]);
        let agents = agents.as_array().cloned().unwrap_or_default();
        agents.len() == 3 && agents.iter().all(|a| a["hardware"]["cpu_cores"].is_u64())
    });
    let (_, table, _) = cli.run(&["agents"]);
    println!("{table}");
    assert!(table.contains(" cpu "), "{table}");

    let apply_and_run = |yaml: &str, job: &str| {
        let file = dir.path().join(format!("{job}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let (code, out, err) = cli.run(&["job", "apply", "-f", file.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{out}{err}");
        let (code, out, err) = cli.run(&["exec", job, "--all"]);
        assert_eq!(code, Some(0), "{out}{err}");
    };
    let yaml = common::example_job("packages.yaml");
    apply_and_run(&yaml, "linux-packages");
    let answer = cli.json(&["inventory", "linux-packages", "--table", "packages"]);
    let rows = answer["rows"].as_array().unwrap();
    let mut per_pc: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        *per_pc.entry(row["pc_id"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(per_pc.len(), 3, "{per_pc:?}");
    let counts: Vec<usize> = per_pc.values().copied().collect();
    assert!(
        counts[0] > 10 && counts.iter().all(|c| *c == counts[0]),
        "{per_pc:?}"
    );
    assert!(answer["skipped"].as_array().unwrap().is_empty(), "{answer}");

    // One package fewer in version 2: removed on every pc.
    let gone = rows[0]["row"]["name"].as_str().unwrap().to_owned();
    let variant = yaml.replace("version: \"1\"", "version: \"2\"").replace(
        "list | LC_ALL=C sort -u",
        &format!("list | awk -F'\\t' '$1 != \"{gone}\"' | LC_ALL=C sort -u"),
    );
    apply_and_run(&variant, "linux-packages");
    let history = cli.json(&["inventory", "history", "linux-packages"]);
    let removed: Vec<&serde_json::Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "removed")
        .collect();
    assert_eq!(removed.len(), 3, "{history}");
    assert!(removed.iter().all(|c| c["before"]["name"] == gone.as_str()));
    let (code, text, err) = cli.run(&["inventory", "history", "linux-packages", "--pc", "pc-2"]);
    assert_eq!(code, Some(0), "{err}");
    println!("{text}");
    assert!(
        text.contains(&format!("packages removed [\"{gone}\"")),
        "{text}"
    );

    apply_and_run(&common::example_job("disk-usage.yaml"), "disk-usage");
    let (code, text, err) = cli.run(&["checks"]);
    assert_eq!(code, Some(0), "{err}");
    println!("{text}");
    let summary = cli.json(&["checks"]);
    let disk = &summary.as_array().unwrap()[0];
    let counted: u64 = ["pass", "warn", "fail", "unknown"]
        .iter()
        .map(|k| disk[k].as_u64().unwrap())
        .sum();
    assert_eq!(
        (counted, disk["never_ran"].as_u64()),
        (3, Some(0)),
        "{summary}"
    );

    // A closed pipe ends the CLI quietly (no panic on stderr).
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --server '{}' inventory linux-packages | head -1 >/dev/null",
            workspace_binary("kanade").display(),
            cli.server
        ))
        .env("KANADE_TOKEN", &cli.token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
