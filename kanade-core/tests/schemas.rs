//! The checked-in `schemas/*.json` must match what the code generates.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use kanade_core::wire::schema::{all_schemas, render};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

#[test]
fn checked_in_schemas_are_current() {
    let regenerate = "run `cargo run -p kanade-core --example export-schemas` and commit schemas/";
    for (name, schema) in all_schemas() {
        let path = schema_dir().join(format!("{name}.json"));
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}): {regenerate}", path.display()));
        assert_eq!(
            on_disk,
            render(&schema),
            "{} is stale: {regenerate}",
            path.display()
        );
    }
}

#[test]
fn no_orphaned_schema_files() {
    let expected = all_schemas();
    for entry in std::fs::read_dir(schema_dir()).expect("schemas/ exists") {
        let name = entry.expect("readable entry").file_name();
        let name = name.to_string_lossy();
        let stem = name.strip_suffix(".json").unwrap_or(&name);
        assert!(
            expected.contains_key(stem),
            "schemas/{name} has no wire type; delete it or export it"
        );
    }
}

#[test]
fn command_schema_names_every_field() {
    let schema = serde_json::to_value(&all_schemas()["command"]).expect("schema is JSON");
    let properties = schema["properties"].as_object().expect("object schema");
    for field in [
        "id",
        "version",
        "request_id",
        "exec_id",
        "shell",
        "script",
        "script_object",
        "script_object_sha256",
        "timeout_secs",
        "jitter_secs",
        "run_as",
        "cwd",
        "deadline_at",
        "staleness",
        "emit",
        "check",
        "retry",
    ] {
        assert!(
            properties.contains_key(field),
            "command schema lacks {field}"
        );
    }
}
