use super::*;
use serde_json::json;

fn packages_hint() -> InventoryHint {
    serde_yaml_ng::from_str(
        "explode:\n  - field: packages\n    table: packages\n    primary_key: [name]\n    columns: [{field: name, type: text}, {field: version, type: text}, {field: size, type: integer}]\n    track_history: true\nhistory_scalars: [kernel]\n",
    )
    .unwrap()
}

#[test]
fn fences_take_the_json_between_them() {
    let out = "checking…\n#KANADE-INVENTORY-BEGIN\n{\"a\": 1}\n#KANADE-INVENTORY-END\ndone\n";
    assert_eq!(fenced(out, INVENTORY_FENCE).unwrap(), "{\"a\": 1}");
    assert_eq!(
        fenced(" {\"a\": 1}\n", INVENTORY_FENCE).unwrap(),
        "{\"a\": 1}"
    );
    // Another kind's fence is just text.
    assert_eq!(fenced(out, CHECK_FENCE).unwrap(), out.trim());
    let err = fenced("log\n#KANADE-CHECK-BEGIN\n{}\n", CHECK_FENCE).unwrap_err();
    assert_eq!(
        err,
        "#KANADE-CHECK-BEGIN on line 2 has no #KANADE-CHECK-END after it"
    );
    // Windows line ends too.
    assert_eq!(
        fenced(
            "#KANADE-CHECK-BEGIN\r\n{}\r\n#KANADE-CHECK-END\r\n",
            CHECK_FENCE
        )
        .unwrap(),
        "{}"
    );
}

#[test]
fn an_answer_becomes_facts_and_rows() {
    let out = json!({
        "kernel": "6.1", "hostname": "pc-1",
        "packages": [{"name": "openssl", "version": "3.0.11", "size": 10, "arch": "amd64"},
                     {"name": "curl", "version": "8.0"}]
    });
    let p = project_inventory(&packages_hint(), &out.to_string()).unwrap();
    assert_eq!(
        p.facts,
        json!({"kernel": "6.1", "hostname": "pc-1"})
            .as_object()
            .unwrap()
            .clone()
    );
    let rows = &p.tables["packages"];
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows["[\"openssl\"]"],
        json!({"name": "openssl", "version": "3.0.11", "size": 10})
            .as_object()
            .unwrap()
            .clone(),
        "only declared columns are kept"
    );
    assert_eq!(rows["[\"curl\"]"]["size"], Value::Null);
}

#[test]
fn malformed_answers_say_why() {
    let hint = packages_hint();
    let cases = [
        ("not json", "stdout is not JSON"),
        ("[1, 2]", "stdout is an array, not a JSON object"),
        ("{}", "the field packages is missing"),
        ("{\"packages\": 3}", "packages is an integer, not an array"),
        ("{\"packages\": [1]}", "packages[0] is not an object"),
        (
            "{\"packages\": [{\"name\": \"a\", \"size\": \"big\"}]}",
            "packages[0].size: expected integer, found a string",
        ),
        (
            "{\"packages\": [{\"version\": \"1\"}]}",
            "packages[0]: the primary key [\"name\"] is missing",
        ),
        (
            "{\"packages\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}",
            "packages[1]: the primary key [\"a\"] appears twice",
        ),
    ];
    for (stdout, expected) in cases {
        let err = project_inventory(&hint, stdout).unwrap_err();
        assert!(err.starts_with(expected), "{stdout}: {err}");
    }
}

#[test]
fn checks_read_status_and_detail() {
    let hint = CheckHint::named("disk");
    let (status, detail) = check_outcome(
        &hint,
        "{\"status\": \"FAIL\", \"detail\": \"/ is 97% full\"}",
    )
    .unwrap();
    assert_eq!(
        (status, detail.as_str()),
        (CheckStatus::Fail, "/ is 97% full")
    );
    assert_eq!(
        check_outcome(&hint, "{\"status\": \"ok\"}").unwrap().0,
        CheckStatus::Pass
    );
    assert_eq!(
        check_outcome(&hint, "{\"status\": \"green\"}").unwrap_err(),
        "status is \"green\": use pass, warn, fail or unknown"
    );
    assert_eq!(
        check_outcome(&hint, "{}").unwrap_err(),
        "the field status is missing"
    );
    assert_eq!(
        check_outcome(&hint, "{\"status\": 1}").unwrap_err(),
        "status is an integer, not a string"
    );
}

#[test]
fn row_changes_are_adds_removes_and_changes() {
    let row = |v: &str| {
        json!({"name": "x", "version": v})
            .as_object()
            .unwrap()
            .clone()
    };
    let old: Rows = [("a".to_owned(), row("1")), ("b".to_owned(), row("1"))].into();
    let new: Rows = [("b".to_owned(), row("2")), ("c".to_owned(), row("1"))].into();
    let changes = diff_rows(&old, &new);
    assert_eq!(
        changes,
        vec![
            RowChange::Removed {
                key: "a".into(),
                row: row("1")
            },
            RowChange::Changed {
                key: "b".into(),
                before: row("1"),
                after: row("2")
            },
            RowChange::Added {
                key: "c".into(),
                row: row("1")
            },
        ]
    );
    assert!(diff_rows(&new, &new).is_empty());
}

#[test]
fn versions_order_by_their_numbers() {
    use std::cmp::Ordering::*;
    for (a, b, order) in [
        ("1.9", "1.10", Less),
        ("2", "1.5.3", Greater),
        ("1.0", "1.0", Equal),
        ("1.0-rc1", "1.0-rc2", Less),
        ("1.0-rc2", "1.0", Less),
        ("1.0", "1.0.1", Less),
        ("1.0.rc1", "1.0.1", Less),
        ("1", "1.1", Less),
        ("v3", "v12", Less),
        ("007", "7", Equal),
        (
            "123456789012345678901234567890123456789012",
            "99999999999999999999999999999999999999999",
            Greater,
        ),
    ] {
        assert_eq!(compare_versions(a, b), order, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), order.reverse(), "{b} vs {a}");
    }
}
