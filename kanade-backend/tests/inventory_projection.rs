//! Results of `inventory:` and `check:` jobs projected by the store, in the
//! transaction that stores the result: facts and rows, their history over
//! runs, check transitions, malformed answers kept with a reason, version
//! ordering, and a property: whatever order results come in, the current
//! tables are the projection of the newest successful answer.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use chrono::{DateTime, Duration, TimeZone, Utc};
use kanade_backend::db::{Db, ExecutionRow};
use kanade_backend::inventory::project::project_inventory;
use kanade_backend::inventory::spec::InventoryHint;
use kanade_core::wire::{CheckHint, ExecResult};
use proptest::prelude::*;
use serde_json::{json, Value};

fn hint() -> InventoryHint {
    serde_yaml_ng::from_str(
        "explode:\n  - field: packages\n    table: packages\n    primary_key: [name]\n    columns: [{field: name, type: text}, {field: version, type: text}]\n    track_history: true\nhistory_scalars: [kernel]\n",
    )
    .unwrap()
}

struct Store {
    _dir: tempfile::TempDir,
    db: Db,
    results: u32,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("b.sqlite")).unwrap();
        for version in ["1", "2", "3"] {
            db.record_job_hints("pkgs", version, Some(&hint()), None)
                .unwrap();
            db.record_job_hints("disk", version, None, Some(&CheckHint::named("disk_space")))
                .unwrap();
        }
        let store = Store {
            _dir: dir,
            db,
            results: 0,
        };
        for version in ["1", "2", "3"] {
            for job in ["pkgs", "disk"] {
                store.execution(&format!("{job}-v{version}"), job, version, 0);
            }
        }
        store
    }

    /// Stores a result of `job` version `version` from `pc`, finished
    /// `minute` minutes after t0.
    fn answer(&mut self, job: &str, version: &str, pc: &str, minute: i64, exit: i32, stdout: &str) {
        self.answer_in(&format!("{job}-v{version}"), job, pc, minute, exit, stdout);
    }

    /// An execution of `job` version `version`, created `minute` minutes
    /// after t0 by the backend's clock.
    fn execution(&self, exec_id: &str, job: &str, version: &str, minute: i64) {
        self.db
            .insert_execution(&ExecutionRow {
                exec_id: exec_id.into(),
                job_id: job.into(),
                version: version.into(),
                request_id: format!("req-{exec_id}"),
                target: "{\"all\":true}".into(),
                targeted: 3,
                status: "running".into(),
                created_at: (t0() + Duration::minutes(minute)).to_rfc3339(),
                started: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
                reap_after_secs: 3600,
                late_targets: 0,
                schedule_id: None,
            })
            .unwrap();
    }

    fn answer_in(
        &mut self,
        exec_id: &str,
        job: &str,
        pc: &str,
        minute: i64,
        exit: i32,
        stdout: &str,
    ) {
        self.results += 1;
        let finished = t0() + Duration::minutes(minute);
        let result: ExecResult = serde_json::from_value(json!({
            "result_id": format!("r{}-{pc}", self.results),
            "request_id": format!("r{}", self.results),
            "exec_id": exec_id,
            "pc_id": pc,
            "exit_code": exit,
            "stdout": stdout,
            "stderr": "",
            "started_at": finished.to_rfc3339(),
            "finished_at": finished.to_rfc3339(),
            "manifest_id": job,
        }))
        .unwrap();
        assert!(self.db.store_result(&result, false).unwrap(), "stored");
    }

    fn packages(&self, pc: &str) -> Vec<(String, String)> {
        self.db
            .inventory_rows("pkgs", Some("packages"), Some(pc), None)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.row["name"].as_str().unwrap().to_owned(),
                    r.row["version"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

fn packages_json(kernel: &str, packages: &[(&str, &str)]) -> String {
    let list: Vec<Value> = packages
        .iter()
        .map(|(n, v)| json!({"name": n, "version": v}))
        .collect();
    json!({"kernel": kernel, "hostname": "h", "packages": list}).to_string()
}

#[test]
fn scalars_and_rows_are_projected_per_pc() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "1",
        "pc-1",
        0,
        0,
        &packages_json("6.1", &[("openssl", "3.0.11"), ("curl", "8.0")]),
    );
    s.answer(
        "pkgs",
        "1",
        "pc-2",
        0,
        0,
        &packages_json("6.2", &[("vim", "9.1")]),
    );
    assert_eq!(
        s.packages("pc-1"),
        vec![
            ("curl".into(), "8.0".into()),
            ("openssl".into(), "3.0.11".into())
        ]
    );
    assert_eq!(s.packages("pc-2"), vec![("vim".into(), "9.1".into())]);
    let facts = s.db.inventory_facts("pkgs", None, None).unwrap();
    assert_eq!(facts.len(), 2);
    assert_eq!(facts[0].facts, json!({"kernel": "6.1", "hostname": "h"}));
    let where_kernel =
        s.db.inventory_facts("pkgs", None, Some(("kernel", "6.2")))
            .unwrap();
    assert_eq!(where_kernel.len(), 1);
    assert_eq!(where_kernel[0].pc_id, "pc-2");
    let openssl =
        s.db.inventory_rows("pkgs", None, None, Some(("name", "openssl")))
            .unwrap();
    assert_eq!(openssl.len(), 1);
    assert!(
        s.db.inventory_history("pkgs", None, None)
            .unwrap()
            .is_empty(),
        "a first answer is no change"
    );
}

#[test]
fn three_runs_record_adds_changes_and_removals() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "1",
        "pc-7",
        0,
        0,
        &packages_json("6.1", &[("openssl", "3.0.11"), ("curl", "8.0")]),
    );
    s.answer(
        "pkgs",
        "1",
        "pc-7",
        60,
        0,
        &packages_json(
            "6.1",
            &[("openssl", "3.0.13"), ("curl", "8.0"), ("vim", "9.1")],
        ),
    );
    s.answer(
        "pkgs",
        "1",
        "pc-7",
        120,
        0,
        &packages_json("6.5", &[("openssl", "3.0.13"), ("vim", "9.1")]),
    );
    let history: Vec<String> =
        s.db.inventory_history("pkgs", Some("pc-7"), None)
            .unwrap()
            .into_iter()
            .map(|c| {
                let version = |v: &Option<Value>| {
                    v.as_ref()
                        .map(|v| {
                            v.get("version")
                                .cloned()
                                .unwrap_or_else(|| v.clone())
                                .to_string()
                        })
                        .unwrap_or_else(|| "-".into())
                };
                format!(
                    "{} {} {} {} -> {}",
                    c.table.as_deref().unwrap_or("scalar"),
                    c.change,
                    c.key,
                    version(&c.before),
                    version(&c.after)
                )
            })
            .collect();
    assert_eq!(
        history,
        vec![
            "packages changed [\"openssl\"] \"3.0.11\" -> \"3.0.13\"",
            "packages added [\"vim\"] - -> \"9.1\"",
            "scalar changed kernel \"6.1\" -> \"6.5\"",
            "packages removed [\"curl\"] \"8.0\" -> -",
        ]
    );
    let since = (t0() + Duration::minutes(100)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    assert_eq!(
        s.db.inventory_history("pkgs", None, Some(&since))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn check_states_and_transitions() {
    let mut s = Store::new();
    let status = |st: &str, detail: &str| json!({"status": st, "detail": detail}).to_string();
    s.answer("disk", "1", "pc-1", 0, 0, &status("pass", "41% used"));
    s.answer("disk", "1", "pc-1", 60, 1, &status("fail", "97% used"));
    s.answer("disk", "1", "pc-1", 120, 1, &status("fail", "98% used"));
    s.answer(
        "disk",
        "1",
        "pc-2",
        0,
        0,
        &format!(
            "log line\n#KANADE-CHECK-BEGIN\n{}\n#KANADE-CHECK-END\n",
            status("warn", "80% used")
        ),
    );
    let failing = s.db.check_states("disk_space", true).unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(
        (failing[0].pc_id.as_str(), failing[0].detail.as_str()),
        ("pc-1", "98% used")
    );
    assert_eq!(
        failing[0].since,
        (t0() + Duration::minutes(60)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "since the transition, not the last run"
    );
    let summary = s.db.check_summary(Some("disk_space")).unwrap();
    assert_eq!(
        (
            summary[0].pass,
            summary[0].warn,
            summary[0].fail,
            summary[0].unknown
        ),
        (0, 1, 1, 0)
    );
}

#[test]
fn malformed_output_is_kept_with_a_reason_and_changes_nothing() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "1",
        "pc-1",
        0,
        0,
        &packages_json("6.1", &[("curl", "8.0")]),
    );
    for (minute, stdout) in [
        (1, "not json"),
        (2, "{\"kernel\": \"x\"}"),
        (3, "{\"packages\": [{\"name\": 5}]}"),
    ] {
        s.answer("pkgs", "1", "pc-1", minute, 0, stdout);
    }
    s.answer("pkgs", "1", "pc-1", 4, 2, &packages_json("6.9", &[]));
    assert_eq!(s.packages("pc-1"), vec![("curl".into(), "8.0".into())]);
    let reasons: Vec<String> =
        s.db.projection_skips(Some("pkgs"), 10)
            .unwrap()
            .into_iter()
            .map(|k| k.reason)
            .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for expected in [
        "stdout is not JSON",
        "the field packages is missing",
        "packages[0].name: expected text, found an integer",
        "the run did not succeed (exit 2)",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(expected)),
            "{expected} not in {reasons:?}"
        );
    }
    // Every result is stored.
    assert_eq!(s.db.results("pkgs-v1").unwrap().len(), 5);
}

#[test]
fn an_older_version_never_overwrites_a_newer_ones_facts() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "2",
        "pc-1",
        0,
        0,
        &packages_json("6.1", &[("new", "2")]),
    );
    // A late result of version 1, finished after it.
    s.answer(
        "pkgs",
        "1",
        "pc-1",
        30,
        0,
        &packages_json("6.1", &[("old", "1")]),
    );
    assert_eq!(s.packages("pc-1"), vec![("new".into(), "2".into())]);
    s.answer(
        "pkgs",
        "3",
        "pc-1",
        10,
        0,
        &packages_json("6.1", &[("newer", "3")]),
    );
    assert_eq!(s.packages("pc-1"), vec![("newer".into(), "3".into())]);
}

#[test]
fn a_later_execution_wins_whatever_the_agents_clock_says() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "1",
        "pc-1",
        600,
        0,
        &packages_json("6.1", &[("old", "1")]),
    );
    // The next run's host clock went back ten hours: still the newer answer.
    s.execution("pkgs-v1-later", "pkgs", "1", 60);
    s.answer_in(
        "pkgs-v1-later",
        "pkgs",
        "pc-1",
        0,
        0,
        &packages_json("6.1", &[("new", "1")]),
    );
    assert_eq!(s.packages("pc-1"), vec![("new".into(), "1".into())]);
}

#[test]
fn a_table_a_new_version_no_longer_explodes_is_emptied() {
    let mut s = Store::new();
    s.answer(
        "pkgs",
        "1",
        "pc-1",
        0,
        0,
        &packages_json("6.1", &[("curl", "8.0")]),
    );
    let facts_only: InventoryHint = serde_yaml_ng::from_str("display: [{field: kernel}]").unwrap();
    s.db.record_job_hints("pkgs", "2", Some(&facts_only), None)
        .unwrap();
    s.answer(
        "pkgs",
        "2",
        "pc-1",
        1,
        0,
        &json!({"kernel": "6.2", "packages": []}).to_string(),
    );
    assert!(s.packages("pc-1").is_empty());
    let facts = s.db.inventory_facts("pkgs", Some("pc-1"), None).unwrap();
    assert_eq!(facts[0].facts["kernel"], "6.2");
}

#[derive(Debug, Clone)]
struct Answer {
    pc: usize,
    version: usize,
    minute: i64,
    kind: u8,
    packages: Vec<(u8, u8)>,
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    (
        0usize..3,
        1usize..4,
        0i64..50,
        0u8..10,
        proptest::collection::vec((0u8..6, 0u8..4), 0..5),
    )
        .prop_map(|(pc, version, minute, kind, packages)| Answer {
            pc,
            version,
            minute,
            kind,
            packages,
        })
}

fn stdout_of(answer: &Answer) -> (i32, String) {
    let packages: Vec<(String, String)> = answer
        .packages
        .iter()
        .map(|(n, v)| (format!("p{n}"), format!("{v}")))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let unique: Vec<(&str, &str)> = packages
        .iter()
        .filter(|(n, _)| seen.insert(n.clone()))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    match answer.kind {
        0 => (1, packages_json("k", &unique)),
        1 => (0, "garbage".into()),
        _ => (0, packages_json(&format!("k{}", answer.minute), &unique)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For any sequence of results per pc, each pc's current rows and facts
    /// are the projection of its newest successful, well-formed answer
    /// (highest version, then latest finish).
    #[test]
    fn current_tables_are_the_newest_good_answer(answers in proptest::collection::vec(answer_strategy(), 1..14)) {
        let mut s = Store::new();
        let mut minutes = std::collections::BTreeSet::new();
        for a in &answers {
            // Distinct finish times per pc keep "latest" well defined.
            if !minutes.insert((a.pc, a.minute)) { continue; }
            let (exit, stdout) = stdout_of(a);
            s.answer("pkgs", &a.version.to_string(), &format!("pc-{}", a.pc), a.minute, exit, &stdout);
        }
        let mut used = std::collections::BTreeSet::new();
        for pc in 0..3 {
            let newest = answers
                .iter()
                .filter(|a| a.pc == pc && used.insert((a.pc, a.minute)))
                .filter(|a| a.kind >= 2)
                .max_by_key(|a| (a.version, a.minute))
                .cloned();
            let pc_name = format!("pc-{pc}");
            match newest {
                None => prop_assert!(s.packages(&pc_name).is_empty()),
                Some(a) => {
                    let expected = project_inventory(&hint(), &stdout_of(&a).1).unwrap();
                    let rows: Vec<(String, String)> = expected.tables["packages"]
                        .values()
                        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["version"].as_str().unwrap().to_owned()))
                        .collect();
                    prop_assert_eq!(s.packages(&pc_name), rows);
                    let facts = s.db.inventory_facts("pkgs", Some(&pc_name), None).unwrap();
                    prop_assert_eq!(&facts[0].facts, &Value::Object(expected.facts));
                    prop_assert_eq!(&facts[0].version, &a.version.to_string());
                }
            }
        }
    }
}
