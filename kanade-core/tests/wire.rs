//! Wire contract behaviour: the reference system's command tests, the
//! captured kanade 0.101 fixture, and `ExecResult` compatibility.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use chrono::{TimeZone, Utc};
use kanade_core::wire::*;
use serde_json::{json, Value};

fn sample_command() -> Command {
    Command {
        id: "echo-test".into(),
        version: "1.0.0".into(),
        request_id: "req-1".into(),
        exec_id: Some("dep-1".into()),
        shell: Shell::Powershell,
        script: "echo hi".into(),
        script_object: None,
        script_object_sha256: None,
        timeout_secs: 30,
        jitter_secs: Some(5),
        run_as: RunAs::System,
        cwd: None,
        deadline_at: None,
        staleness: Staleness::Cached,
        emit: None,
        check: None,
        retry: None,
        issued_at: None,
        kitting: false,
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).expect("encode");
    serde_json::from_str(&text).expect("decode")
}

#[test]
fn shells_serialise_lowercase() {
    for (shell, text) in [
        (Shell::Powershell, "\"powershell\""),
        (Shell::Cmd, "\"cmd\""),
        (Shell::Sh, "\"sh\""),
        (Shell::Pwsh, "\"pwsh\""),
        (Shell::Bash, "\"bash\""),
    ] {
        assert_eq!(serde_json::to_string(&shell).unwrap(), text);
        assert_eq!(serde_json::from_str::<Shell>(text).unwrap(), shell);
        assert_eq!(format!("\"{}\"", shell.as_str()), text);
    }
    assert!(serde_json::from_str::<Shell>("\"Powershell\"").is_err());
}

#[test]
fn run_as_serialises_snake_case_and_defaults_to_system() {
    for (mode, text) in [
        (RunAs::System, "\"system\""),
        (RunAs::User, "\"user\""),
        (RunAs::SystemGui, "\"system_gui\""),
    ] {
        assert_eq!(serde_json::to_string(&mode).unwrap(), text);
        assert_eq!(serde_json::from_str::<RunAs>(text).unwrap(), mode);
    }
    assert_eq!(RunAs::default(), RunAs::System);
}

#[test]
fn command_round_trips_each_run_as() {
    for run_as in [RunAs::System, RunAs::User, RunAs::SystemGui] {
        let command = Command {
            run_as,
            ..sample_command()
        };
        assert_eq!(round_trip(&command), command);
    }
}

#[test]
fn command_accepts_missing_optional_fields() {
    let command: Command = serde_json::from_str(
        r#"{"id":"x","version":"1.0.0","request_id":"r","shell":"cmd","script":"echo","timeout_secs":5}"#,
    )
    .expect("decode");
    assert_eq!(command.exec_id, None);
    assert_eq!(command.jitter_secs, None);
    assert_eq!(command.shell, Shell::Cmd);
    assert_eq!(command.run_as, RunAs::System);
    assert_eq!(command.cwd, None);
    assert_eq!(command.deadline_at, None);
    assert_eq!(command.script_object, None);
    assert_eq!(command.script_object_sha256, None);
    assert_eq!(command.staleness, Staleness::Cached);
    assert_eq!(command.retry, None);
}

#[test]
fn command_ignores_unknown_fields() {
    let command: Command = serde_json::from_str(
        r#"{"id":"x","version":"1","request_id":"r","shell":"sh","script":"true","timeout_secs":5,
            "from_the_future":{"nested":[1,2,3]}}"#,
    )
    .expect("unknown fields are ignored");
    assert_eq!(command.id, "x");
}

#[test]
fn legacy_job_id_decodes_as_exec_id() {
    let command: Command = serde_json::from_str(
        r#"{"id":"x","version":"1.0.0","request_id":"r","job_id":"legacy-exec-uuid",
            "shell":"powershell","script":"echo","timeout_secs":5}"#,
    )
    .expect("decode legacy");
    assert_eq!(command.exec_id.as_deref(), Some("legacy-exec-uuid"));
    let text = serde_json::to_string(&command).unwrap();
    assert!(text.contains("\"exec_id\":\"legacy-exec-uuid\""), "{text}");
    assert!(!text.contains("job_id"), "{text}");
}

#[test]
fn script_object_fields_round_trip() {
    let digest = "deadbeef".repeat(8);
    let command = Command {
        script: String::new(),
        script_object: Some("cleanup-disk-temp/1.0.1".into()),
        script_object_sha256: Some(digest.clone()),
        ..sample_command()
    };
    let back = round_trip(&command);
    assert_eq!(back.script, "");
    assert_eq!(
        back.script_object.as_deref(),
        Some("cleanup-disk-temp/1.0.1")
    );
    assert_eq!(back.script_object_sha256.as_deref(), Some(digest.as_str()));
}

#[test]
fn deadline_and_retry_round_trip() {
    let deadline = Utc.with_ymd_and_hms(2026, 5, 18, 9, 30, 0).unwrap();
    let command = Command {
        deadline_at: Some(deadline),
        retry: Some(RetrySpec {
            max: 3,
            backoff_secs: 600,
        }),
        ..sample_command()
    };
    let back = round_trip(&command);
    assert_eq!(back.deadline_at, Some(deadline));
    assert_eq!(
        back.retry,
        Some(RetrySpec {
            max: 3,
            backoff_secs: 600
        })
    );
}

#[test]
fn retry_absent_when_none() {
    let text = serde_json::to_string(&sample_command()).unwrap();
    assert!(
        !text.contains("retry"),
        "retry must not appear when None: {text}"
    );
}

#[test]
fn staleness_is_tagged_by_mode() {
    let strict = Staleness::Strict {
        max_cache_age: "5m".into(),
    };
    assert_eq!(
        serde_json::to_value(&strict).unwrap(),
        json!({"mode": "strict", "max_cache_age": "5m"})
    );
    assert_eq!(
        serde_json::to_value(Staleness::Unchecked).unwrap(),
        json!({"mode": "unchecked"})
    );
    assert_eq!(round_trip(&strict), strict);
}

#[test]
fn malformed_staleness_fails_closed() {
    let base = r#"{"id":"x","version":"1","request_id":"r","shell":"sh","script":"true","timeout_secs":5,"staleness":"#;
    let fail_closed = Staleness::Strict {
        max_cache_age: String::new(),
    };
    for staleness in [
        r#"{"mode":"strict"}"#,
        r#"{"mode":"strict","max_cache_age":null}"#,
        r#"{"mode":"strict","max_cache_age":300}"#,
        r#"{"mode":"paranoid"}"#,
        r#"{}"#,
        r#""cached""#,
        "42",
    ] {
        let command: Command = serde_json::from_str(&format!("{base}{staleness}}}"))
            .unwrap_or_else(|e| panic!("{staleness}: {e}"));
        assert_eq!(command.staleness, fail_closed, "{staleness}");
    }
    let null: Command = serde_json::from_str(&format!("{base}null}}")).unwrap();
    assert_eq!(
        null.staleness,
        Staleness::Cached,
        "null is the same as absent"
    );
}

#[test]
fn emit_and_check_use_reference_shapes() {
    let command: Command = serde_json::from_str(
        r#"{"id":"x","version":"1","request_id":"r","shell":"sh","script":"true","timeout_secs":5,
            "emit":{"type":"events"},"check":{"name":"disk_space"}}"#,
    )
    .unwrap();
    assert_eq!(
        command.emit,
        Some(EmitConfig {
            kind: EmitKind::Events
        })
    );
    let check = command.check.expect("check decoded");
    assert_eq!(check, CheckHint::named("disk_space"));
    assert_eq!(check.status_field, "status");
    assert_eq!(check.detail_field, "detail");
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/kanade-0.101/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn fixture_copy_matches_the_shared_capture() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/kanade-0.101/command_all.json"
    );
    match std::fs::read_to_string(shared) {
        Ok(original) => assert_eq!(
            serde_json::from_str::<Value>(&original).unwrap(),
            fixture("command_all.json"),
            "tests/fixtures drifted from {shared}"
        ),
        Err(_) => eprintln!("{shared} not present; using the copy in tests/fixtures"),
    }
}

#[test]
fn kanade_0_101_command_capture_round_trips_key_for_key() {
    let captured = fixture("command_all.json");
    assert_eq!(captured["subject"], "commands.all");
    let payload = captured["payload"].clone();
    let command: Command = serde_json::from_value(payload.clone()).expect("fixture decodes");
    assert_eq!(command.shell, Shell::Sh);
    assert_eq!(command.jitter_secs, None);
    assert_eq!(
        command.exec_id.as_deref(),
        Some("a5bde7da-7be0-403d-8751-bc720336bb10")
    );
    let re_encoded = serde_json::to_value(&command).unwrap();
    assert_eq!(re_encoded, payload, "re-encoding changed the capture");
    // Same keys and same values give the same compact byte length.
    assert_eq!(
        serde_json::to_vec(&command).unwrap().len(),
        captured["bytes"].as_u64().unwrap() as usize,
        "same byte length as the captured message"
    );
}

const REFERENCE_RESULT: &str = r#"{
  "result_id": "0f6c1d9e-58a4-4a63-9d1c-2a8e8e4f3b10",
  "request_id": "65938732-216f-4a63-b1d3-9b3e6199dd7d",
  "exec_id": "a5bde7da-7be0-403d-8751-bc720336bb10",
  "pc_id": "pc-001",
  "exit_code": 0,
  "skipped": false,
  "stdout": "hi\n",
  "stderr": "",
  "started_at": "2026-05-18T09:30:00.123456789Z",
  "finished_at": "2026-05-18T09:30:00.987654321Z",
  "manifest_id": "echo-hi"
}"#;

#[test]
fn exec_result_round_trips_every_key_with_nanoseconds() {
    let original: Value = serde_json::from_str(REFERENCE_RESULT).unwrap();
    let result: ExecResult = serde_json::from_value(original.clone()).unwrap();
    assert!(!result.skipped);
    assert_eq!(result.attempts, 1);
    assert_eq!(result.started_at.timestamp_subsec_nanos(), 123_456_789);
    assert_eq!(result.manifest_id.as_deref(), Some("echo-hi"));
    assert_eq!(serde_json::to_value(&result).unwrap(), original);
}

#[test]
fn exec_result_skipped_decodes_from_missing_null_or_bool() {
    let mut base: Value = serde_json::from_str(REFERENCE_RESULT).unwrap();
    for (value, expected) in [
        (None, false),
        (Some(Value::Null), false),
        (Some(json!(true)), true),
    ] {
        match value {
            None => {
                base.as_object_mut().unwrap().remove("skipped");
            }
            Some(v) => base["skipped"] = v,
        }
        let result: ExecResult = serde_json::from_value(base.clone()).unwrap();
        assert_eq!(result.skipped, expected);
        assert_eq!(
            serde_json::to_value(&result).unwrap()["skipped"],
            json!(expected)
        );
    }
    base["skipped"] = json!("yes");
    assert!(serde_json::from_value::<ExecResult>(base).is_err());
}

#[test]
fn exec_result_writes_attempts_only_when_retried() {
    let mut result: ExecResult = serde_json::from_str(REFERENCE_RESULT).unwrap();
    assert!(!serde_json::to_string(&result).unwrap().contains("attempts"));
    result.attempts = 3;
    let value = serde_json::to_value(&result).unwrap();
    assert_eq!(value["attempts"], 3);
    assert_eq!(round_trip(&result).attempts, 3);
}

#[test]
fn agent_groups_are_sorted_and_unique() {
    let groups = AgentGroups::new(["canary", "accounting", "canary", "b"]);
    assert_eq!(groups.groups(), ["accounting", "b", "canary"]);
    assert!(groups.contains("b") && !groups.contains("c"));
    let decoded: AgentGroups = serde_json::from_str(r#"{"groups":["z","a","z"]}"#).unwrap();
    assert_eq!(decoded.groups(), ["a", "z"]);
    let empty: AgentGroups = serde_json::from_str("{}").unwrap();
    assert!(empty.groups().is_empty());
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for text in [
        "",
        "{",
        "null",
        "[]",
        r#"{"id":1}"#,
        r#"{"exit_code":"x"}"#,
        "\u{0}",
    ] {
        assert!(serde_json::from_str::<Command>(text).is_err(), "{text:?}");
        assert!(
            serde_json::from_str::<ExecResult>(text).is_err(),
            "{text:?}"
        );
        assert!(serde_json::from_str::<Heartbeat>(text).is_err(), "{text:?}");
    }
    let bad_time = REFERENCE_RESULT.replace("2026-05-18T09:30:00.123456789Z", "yesterday");
    assert!(serde_json::from_str::<ExecResult>(&bad_time).is_err());
}
