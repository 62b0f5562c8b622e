//! Names: constants, token validation, subject and key builders.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use kanade_core::names::subjects::{self, InventoryKind, OutputStream};
use kanade_core::names::*;
use proptest::prelude::*;

fn token(value: &str) -> SubjectToken {
    SubjectToken::pc(value).expect("valid token")
}

#[test]
fn bucket_and_store_names_match_the_reference() {
    assert_eq!(
        ALL_BUCKETS,
        [
            "agents_state",
            "agent_config",
            "agent_groups",
            "jobs",
            "jobs_yaml",
            "schedules",
            "schedules_yaml",
            "script_current",
            "script_status"
        ]
    );
    assert_eq!(
        ALL_OBJECT_STORES,
        ["agent_releases", "app_packages", "result_output", "scripts"]
    );
    assert_eq!(STDOUT_INLINE_THRESHOLD, 262_144);
    assert_eq!(
        (SCRIPT_STATUS_ACTIVE, SCRIPT_STATUS_REVOKED),
        ("ACTIVE", "REVOKED")
    );
    assert_eq!(
        (KEY_AGENT_CONFIG_GLOBAL, KEY_AGENT_TARGET_VERSION),
        ("global", "target_version")
    );
}

#[test]
fn streams_match_the_provisioning_table() {
    let table: Vec<_> = ALL_STREAMS
        .iter()
        .map(|s| {
            (
                s.name,
                s.subjects[0],
                s.max_age.as_secs() / 86_400,
                s.max_bytes >> 20,
                s.max_msgs_per_subject,
            )
        })
        .collect();
    assert_eq!(
        table,
        [
            ("EXEC", "commands.>", 7, 64, Some(1)),
            ("RESULTS", "results.>", 30, 2048, None),
            ("EVENTS", "events.>", 7, 256, None),
            ("AUDIT", "audit.>", 90, 512, None),
            ("OBS_EVENTS", "obs.>", 90, 512, None),
            ("INVENTORY", "inventory.>", 90, 1024, None),
        ]
    );
}

#[test]
fn subjects_are_built_from_tokens() {
    let pc = token("pc-001");
    let group = token("canary");
    let exec = token("a5bde7da-7be0");
    assert_eq!(subjects::COMMANDS_ALL, "commands.all");
    assert_eq!(subjects::commands_group(&group), "commands.group.canary");
    assert_eq!(subjects::commands_pc(&pc), "commands.pc.pc-001");
    assert_eq!(subjects::results(&exec), "results.a5bde7da-7be0");
    assert_eq!(subjects::heartbeat(&pc), "heartbeat.pc-001");
    assert_eq!(subjects::ping(&pc), "agents.pc-001.ping");
    assert_eq!(
        subjects::events_started(&exec, &pc),
        "events.started.a5bde7da-7be0.pc-001"
    );
    assert_eq!(subjects::kill(&exec), "kill.a5bde7da-7be0");
    assert_eq!(subjects::obs(&pc), "obs.pc-001");
    assert_eq!(
        subjects::inventory(&pc, InventoryKind::Hw),
        "inventory.pc-001.hw"
    );
    assert_eq!(
        subjects::inventory(&pc, InventoryKind::Sw),
        "inventory.pc-001.sw"
    );
    assert_eq!(
        subjects::inventory(&pc, InventoryKind::Net),
        "inventory.pc-001.net"
    );
    let (alice, revoke) = (token("alice"), token("revoke"));
    assert_eq!(subjects::audit(&alice, &revoke, None), "audit.alice.revoke");
    assert_eq!(
        subjects::audit(&alice, &revoke, Some(&exec)),
        "audit.alice.revoke.a5bde7da-7be0"
    );
    assert_eq!(
        subjects::agent_command_filters(&pc, &[token("a"), token("b")]),
        [
            "commands.all",
            "commands.pc.pc-001",
            "commands.group.a",
            "commands.group.b"
        ]
    );
    assert_eq!(
        subjects::result_output_key(&exec, &pc, OutputStream::Stderr),
        "a5bde7da-7be0/pc-001/stderr"
    );
}

#[test]
fn agent_config_keys_round_trip() {
    let group = token("canary");
    let pc = token("pc-7");
    assert_eq!(agent_config_group_key(&group), "groups.canary");
    assert_eq!(agent_config_pc_key(&pc), "pcs.pc-7");
    assert_eq!(
        parse_agent_config_group_key("groups.canary"),
        Some("canary")
    );
    assert_eq!(parse_agent_config_pc_key("pcs.pc-7"), Some("pc-7"));
    for other in [
        "global",
        "target_version",
        "groups.",
        "pcs.",
        "pcs.pc-7x".get(..3).unwrap(),
    ] {
        assert_eq!(parse_agent_config_group_key(other), None, "{other}");
        assert_eq!(parse_agent_config_pc_key(other), None, "{other}");
    }
    assert_eq!(parse_agent_config_group_key("pcs.pc-7"), None);
}

#[test]
fn invalid_tokens_name_the_value_and_the_rule() {
    let cases = [
        ("", "pc id must not be empty"),
        ("a.b", "pc id \"a.b\" contains '.' at byte 1"),
        ("all*", "contains '*'"),
        ("x>", "contains '>'"),
        ("has space", "contains ' '"),
        ("tab\there", "contains '\\t'"),
        ("nul\0", "contains '\\0'"),
        ("a/b", "contains '/'"),
    ];
    for (value, expected) in cases {
        let err = SubjectToken::pc(value).expect_err(value).to_string();
        assert!(err.contains(expected), "{value:?}: {err}");
        if !value.is_empty() {
            assert!(
                err.contains("only ASCII letters, digits, '-' and '_'"),
                "{err}"
            );
        }
    }
    let long = "x".repeat(129);
    assert!(matches!(
        SubjectToken::group(long),
        Err(InvalidToken::TooLong { len: 129, .. })
    ));
    let err = SubjectToken::new(TokenKind::Group, "a b")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("group name \"a b\""), "{err}");
}

fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every string of the safe alphabet (1..=128 bytes) is accepted unchanged.
    #[test]
    fn safe_alphabet_is_accepted(value in "[A-Za-z0-9_-]{1,128}") {
        let token = SubjectToken::pc(value.clone()).unwrap();
        prop_assert_eq!(token.as_str(), value.as_str());
        prop_assert_eq!(subjects::heartbeat(&token).split('.').count(), 2);
    }

    /// Any string is accepted exactly when it is non-empty, short enough and
    /// made only of the safe alphabet.
    #[test]
    fn acceptance_is_exactly_the_safe_alphabet(value in any::<String>()) {
        let expected = !value.is_empty() && value.len() <= 128 && value.chars().all(is_safe);
        prop_assert_eq!(SubjectToken::pc(value.clone()).is_ok(), expected, "{:?}", value);
    }

    /// Injecting one unsafe character anywhere is always rejected.
    #[test]
    fn one_unsafe_character_is_rejected(
        prefix in "[a-z0-9]{0,10}",
        bad in prop_oneof![Just('.'), Just('*'), Just('>'), Just(' '), Just('\n'), Just('\u{7f}'), any::<char>().prop_filter("unsafe", |c| !is_safe(*c))],
        suffix in "[a-z0-9]{0,10}",
    ) {
        let value = format!("{prefix}{bad}{suffix}");
        let is_forbidden_char = matches!(
            SubjectToken::pc(value),
            Err(InvalidToken::ForbiddenChar { found, at, .. }) if found == bad && at == prefix.len()
        );
        prop_assert!(is_forbidden_char);
    }
}
