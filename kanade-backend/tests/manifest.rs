//! Manifest parsing and validation: the reference sample applies unchanged,
//! and every error names its field and line.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;

use kanade_backend::manifest::{parse_job, parse_schedule};
use kanade_core::wire::{RunAs, Shell};

fn no_files() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn the_reference_sample_job_parses() {
    let yaml = "id: echo-test\nversion: 1.0.0\nexecute:\n  shell: powershell\n  script: \"echo 'kanade'\"\n  timeout: 30s\n";
    let job = parse_job(yaml, &no_files()).unwrap();
    assert_eq!(
        (job.id.as_str(), job.version.as_str()),
        ("echo-test", "1.0.0")
    );
    assert_eq!(job.execute.shell, Shell::Powershell);
    assert_eq!(job.execute.script.as_deref(), Some("echo 'kanade'"));
    assert_eq!(job.execute.run_as, RunAs::System);
}

#[test]
fn a_full_job_parses() {
    let yaml = r#"
id: disk-check
version: 2.1.0
description: free space
execute:
  shell: bash
  script_file: check.sh
  timeout: 2m
  run_as: system
  cwd: /tmp
staleness:
  mode: strict
  max_cache_age: 10m
check:
  name: disk_space
inventory:
  display: [{field: free_bytes, label: Free, type: bytes}]
require_approval: true
tags: [health, disk]
"#;
    let files = BTreeMap::from([("check.sh".to_owned(), "df -h".to_owned())]);
    let job = parse_job(yaml, &files).unwrap();
    assert_eq!(job.execute.script.as_deref(), Some("df -h"));
    assert!(job.require_approval.required() && job.inventory.is_some() && job.check.is_some());
}

fn job_error(yaml: &str) -> (Option<usize>, String, String) {
    let errors = parse_job(yaml, &no_files()).unwrap_err().errors;
    let first = &errors[0];
    (first.line, first.field.clone(), first.message.clone())
}

#[test]
fn job_errors_name_field_and_line() {
    let base = "id: j\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: 30s\n";
    let (line, field, message) = job_error(&format!("{base}colour: blue\n"));
    assert_eq!((line, field.as_str()), (Some(7), "colour"), "{message}");
    assert!(message.contains("is not a known key"), "{message}");

    let (line, _, message) = job_error(&base.replace("shell: sh", "shell: fish"));
    assert_eq!(line, Some(4), "{message}");
    assert!(message.contains("fish"), "{message}");

    let (line, field, message) = job_error(&base.replace("timeout: 30s", "timeout: thirty"));
    assert_eq!(
        (line, field.as_str()),
        (Some(6), "execute.timeout"),
        "{message}"
    );

    let (line, field, message) =
        job_error(&base.replace("script: echo", "script: echo\n  script_object: a/1"));
    assert_eq!((line, field.as_str()), (Some(3), "execute"), "{message}");
    assert!(message.contains("exactly one"), "{message}");

    let (_, field, message) = job_error(&base.replace("id: j", "id: bad.id"));
    assert_eq!(field, "id");
    assert!(message.contains("'.'"), "{message}");

    let big = format!(
        "id: j\nversion: 1\nexecute:\n  shell: sh\n  script: \"{}\"\n  timeout: 30s\n",
        "x".repeat(4 * 1024 * 1024 + 1)
    );
    let (line, field, message) = job_error(&big);
    assert_eq!(
        (line, field.as_str()),
        (Some(5), "execute.script"),
        "{message}"
    );
}

const SCHEDULE: &str = "id: nightly\njob_id: disk-check\nwhen:\n  calendar:\n    at: \"02:00\"\n    days: [mon-fri]\ntarget:\n  groups: [canary]\n";

#[test]
fn schedules_parse() {
    let schedule = parse_schedule(SCHEDULE).unwrap();
    assert!(schedule.when.calendar.is_some() && schedule.when.forms() == 1);
    assert!(schedule.enabled);
    let full = format!(
        "{SCHEDULE}rollout:\n  strategy: wave\n  waves:\n    - group: canary\n    - group: all-pcs\n      delay: 1h\njitter: 5m\non_failure:\n  retry:\n    max: 3\n    backoff: 30s\ntz: utc\nstarting_deadline: 2h\nconstraints:\n  window: \"01:00-05:00\"\n  max_concurrent: 50\n"
    );
    parse_schedule(&full).unwrap();
}

fn schedule_error(yaml: &str) -> (Option<usize>, String, String) {
    let errors = parse_schedule(yaml).unwrap_err().errors;
    (
        errors[0].line,
        errors[0].field.clone(),
        errors[0].message.clone(),
    )
}

#[test]
fn schedule_errors_name_field_and_line() {
    let (line, field, message) = schedule_error(&format!(
        "{SCHEDULE}on_failure:\n  retry:\n    max: 11\n    backoff: 30s\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(11), "on_failure.retry.max"),
        "{message}"
    );
    assert!(message.contains("between 1 and 10"), "{message}");

    let (line, field, message) = schedule_error(&format!(
        "{SCHEDULE}on_failure:\n  retry:\n    max: 2\n    backoff: 500ms\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(12), "on_failure.retry.backoff"),
        "{message}"
    );

    let (_, field, message) = schedule_error(&SCHEDULE.replace("[canary]", "[\"has space\"]"));
    assert_eq!(field, "target.groups", "{message}");

    let (_, field, message) = schedule_error(&format!("{SCHEDULE}starting_deadline: 10m\nrollout:\n  strategy: wave\n  waves:\n    - group: late\n      delay: 1h\n"));
    assert_eq!(field, "rollout.waves", "{message}");
    assert!(message.contains("starting_deadline"), "{message}");

    let (line, _, message) = schedule_error(&SCHEDULE.replace("calendar:", "hourly:"));
    assert!(message.contains("hourly"), "{message}");
    assert!(line.is_some());
}

/// Case 6 of the reliability issue: a duplicate key anywhere — top level,
/// nested, inside free-form fields, in flow style — is refused with its line.
#[test]
fn case_6_duplicate_keys_are_refused_anywhere_with_their_line() {
    let schedules = [
        "id: s\njob_id: j\nwhen:\n  calendar:\n    at: \"09:00\"\n    at: \"10:00\"\n    days: [mon]\ntarget:\n  all: true\n",
        "id: s\njob_id: j\nwhen: {calendar: {at: \"09:00\", at: \"10:00\", days: [mon]}}\ntarget:\n  all: true\n",
        "id: s\njob_id: j\nwhen:\n  per_target: once\ntarget:\n  all: true\n  all: false\n",
        "id: s\nid: t\njob_id: j\nwhen:\n  per_target: once\ntarget:\n  all: true\n",
    ];
    for text in schedules {
        let err = parse_schedule(text).unwrap_err();
        let first = &err.errors[0];
        assert!(first.line.is_some(), "{text}: {first:?}");
        assert!(first.message.contains("duplicate"), "{text}: {first:?}");
    }
    let job = "id: j\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  script: echo twice\n  timeout: 30s\n";
    let err = parse_job(job, &Default::default()).unwrap_err();
    assert_eq!(err.errors[0].line, Some(6), "{err:?}");
}

/// An error inside a flow-style mapping names its line too.
#[test]
fn flow_style_errors_name_their_line() {
    let job = "id: j\nversion: 1\nexecute: { shell: sh, script: echo, timeout: soon }\n";
    let err = parse_job(job, &Default::default()).unwrap_err();
    assert_eq!(err.errors[0].line, Some(3), "{err:?}");
    assert_eq!(err.errors[0].field, "execute.timeout");
    let job = "id: j\nversion: 1\nexecute: {\n  shell: sh,\n  script: echo,\n  timeout: soon\n}\n";
    let err = parse_job(job, &Default::default()).unwrap_err();
    assert_eq!(err.errors[0].line, Some(6), "{err:?}");
}

/// Case 7 of the reliability issue: what editors save is made runnable or
/// refused naming the file — a UTF-8 byte-order mark is dropped, Windows
/// line endings become `\n` for sh and bash (PowerShell keeps them), and
/// UTF-16 with a byte-order mark is decoded; other bytes are refused.
#[test]
fn case_7_editor_encodings_are_normalised_or_refused() {
    use kanade_backend::manifest::decode_script_file;
    let job = |shell: &str, body: &str| {
        let yaml = format!(
            "id: bom\nversion: 1\nexecute:\n  shell: {shell}\n  script_file: bom.sh\n  timeout: 30s\n"
        );
        let files = BTreeMap::from([("bom.sh".to_owned(), body.to_owned())]);
        parse_job(&yaml, &files).unwrap().execute.script.unwrap()
    };
    assert_eq!(job("sh", "\u{feff}echo bom-ok\n"), "echo bom-ok\n");
    assert_eq!(job("bash", "echo a\r\necho b\r\n"), "echo a\necho b\n");
    assert_eq!(job("sh", "\u{feff}echo a\r\n"), "echo a\n");
    assert_eq!(
        job("powershell", "\u{feff}Write-Output a\r\n"),
        "Write-Output a\r\n"
    );
    let utf8_bom = [&[0xEF, 0xBB, 0xBF][..], b"echo bom-ok\n"].concat();
    assert_eq!(
        decode_script_file("bom.sh", &utf8_bom).unwrap(),
        "\u{feff}echo bom-ok\n"
    );
    let mut le = vec![0xFF, 0xFE];
    le.extend("echo hi\n".encode_utf16().flat_map(u16::to_le_bytes));
    assert_eq!(decode_script_file("w.ps1", &le).unwrap(), "echo hi\n");
    let mut be = vec![0xFE, 0xFF];
    be.extend("echo hi\n".encode_utf16().flat_map(u16::to_be_bytes));
    assert_eq!(decode_script_file("w.ps1", &be).unwrap(), "echo hi\n");
    let err = decode_script_file("latin1.sh", &[b'e', 0xE9, b'\n']).unwrap_err();
    assert!(err.contains("latin1.sh") && err.contains("UTF-8"), "{err}");
}

/// Issue 23, item 8: each problem of a broken manifest is reported once,
/// with its line (when the key is there), the field's real dotted name and
/// a sentence — no empty field, no "target" for a job id, no parser
/// jargon ("expected number at 0", "at line 4 column 10").
#[test]
fn item_8_manifest_errors_name_line_field_and_say_what_is_wrong() {
    let none = Default::default();
    let job = |execute: &str| {
        format!("id: x\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n{execute}")
    };
    let cases: Vec<(String, Option<usize>, &str, &str)> = vec![
        (
            job("  timeout: 30s\n").replace("shell: sh", "shell: zsh"),
            Some(4),
            "execute.shell",
            "`zsh` is not allowed; use one of",
        ),
        (
            job("  timeout: soon\n"),
            Some(6),
            "execute.timeout",
            "write a number and a unit",
        ),
        (
            job("  timeout: 5 parsecs\n"),
            Some(6),
            "execute.timeout",
            "is not a duration",
        ),
        (
            job(""),
            Some(4),
            "execute.timeout",
            "is required but missing",
        ),
        (
            job("  timeout: 30s\n  shel: sh\n"),
            Some(7),
            "execute.shel",
            "is not a known key here",
        ),
        (
            job("  timeout: 30s\n").replace("id: x", "id: 'bad id'"),
            Some(1),
            "id",
            "job id \"bad id\"",
        ),
    ];
    for (yaml, line, field, says) in cases {
        let errors = kanade_backend::manifest::parse_job(&yaml, &none).unwrap_err();
        assert_eq!(errors.errors.len(), 1, "{yaml}: {errors:?}");
        let e = &errors.errors[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{yaml}: {e:?}");
        assert!(e.message.contains(says), "{yaml}: {e:?}");
        for jargon in ["expected number", " column ", "at line", "unknown variant"] {
            assert!(!e.message.contains(jargon), "{yaml}: {e:?}");
        }
    }
    let schedule = |body: &str| format!("id: s\njob_id: x\n{body}");
    for (yaml, line, field, says) in [
        (
            schedule("when:\n  per_pc: once\n"),
            None,
            "target",
            "names no agents",
        ),
        (
            schedule("when:\n  per_pc: {every: soon}\ntarget:\n  all: true\n"),
            Some(3),
            "when",
            "write a number and a unit",
        ),
        (
            schedule("when:\n  per_pc: once\ntarget:\n  all: true\n")
                .replace("job_id: x", "job_id: 'a b'"),
            Some(2),
            "job_id",
            "job id \"a b\"",
        ),
    ] {
        let errors = kanade_backend::manifest::parse_schedule(&yaml).unwrap_err();
        assert_eq!(errors.errors.len(), 1, "{yaml}: {errors:?}");
        let e = &errors.errors[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{yaml}: {e:?}");
        assert!(e.message.contains(says), "{yaml}: {e:?}");
        assert!(!e.to_string().contains("line ?"), "{e}");
    }
}

// ------------------------------------------------ inventory and check hints

const INVENTORY_JOB: &str = "id: packages\nversion: \"1\"\nexecute:\n  shell: sh\n  script: dpkg-query -W\n  timeout: 1m\ninventory:\n  display: [{field: hostname, label: Host}]\n  explode:\n    - field: packages\n      table: packages\n      primary_key: [name]\n      columns:\n        - {field: name, type: text, index: true}\n        - {field: version, type: text}\n      track_history: true\n  history_scalars: [kernel]\n";

#[test]
fn inventory_and_check_hints_parse() {
    let job = parse_job(INVENTORY_JOB, &no_files()).unwrap();
    let inventory = job.inventory_hint().unwrap();
    assert_eq!(inventory.explode[0].primary_key, vec!["name".to_owned()]);
    assert!(inventory.explode[0].track_history);
    let check = parse_job(
        "id: disk\nversion: \"1\"\nexecute: {shell: sh, script: df, timeout: 1m}\ncheck: {name: disk_space, label: Disk space}\n",
        &no_files(),
    )
    .unwrap()
    .check
    .unwrap();
    assert_eq!(
        (check.status_field.as_str(), check.detail_field.as_str()),
        ("status", "detail")
    );
}

/// A job stored before the hint was typed (any JSON under `inventory`)
/// still loads; it just has no typed hint.
#[test]
fn a_stored_job_with_an_old_free_form_hint_still_loads() {
    let stored = serde_json::json!({
        "id": "old", "version": "1",
        "execute": {"shell": "sh", "script_object": "old/1", "timeout": "1m"},
        "inventory": {"table": "disks"},
    });
    let job: kanade_backend::manifest::Job = serde_json::from_value(stored).unwrap();
    assert!(job.inventory.is_some() && job.inventory_hint().is_none());
}

#[test]
fn hint_mistakes_name_their_field_and_line() {
    let cases = [
        (
            INVENTORY_JOB.replace("type: text, index", "type: blob, index"),
            "blob",
            Some(14),
        ),
        (
            INVENTORY_JOB.replace("primary_key: [name]", "primary_key: [id]"),
            "inventory.explode.primary_key: \"id\" is not one of the table's columns",
            Some(12),
        ),
        (
            INVENTORY_JOB.replace("table: packages", "table: \"\""),
            "inventory.explode.table: must not be empty",
            Some(11),
        ),
        (
            format!("{INVENTORY_JOB}emit: {{type: events}}\n"),
            "inventory: cannot be combined with emit",
            Some(7),
        ),
        (
            "id: disk\nversion: \"1\"\nexecute: {shell: sh, script: df, timeout: 1m}\ncheck: {name: \"\"}\n".to_owned(),
            "check.name: check name must not be empty",
            Some(4),
        ),
    ];
    for (yaml, expected, line) in cases {
        let err = parse_job(&yaml, &no_files()).unwrap_err();
        let found = err
            .errors
            .iter()
            .find(|e| e.to_string().contains(expected))
            .unwrap_or_else(|| panic!("{expected:?} not in {err}"));
        assert_eq!(found.line, line, "{found}");
    }
}
