//! `nats-auth`: the permissions it derives, the authorization block and
//! the seed files it keeps.

#![allow(clippy::unwrap_used)]

use kanade_backend::nats_auth::*;
use kanade_core::names::SubjectToken;

fn pc(name: &str) -> SubjectToken {
    SubjectToken::pc(name).unwrap()
}

/// NATS subject matching for permission checks: `*` one token, `>`
/// the rest.
fn allows(patterns: &[String], subject: &str) -> bool {
    patterns.iter().any(|p| {
        let mut pattern = p.split('.');
        let mut tokens = subject.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    })
}

#[test]
fn an_agent_publishes_only_its_own_subjects() {
    let p = agent_permissions(&pc("pc-001"));
    for ok in [
        "heartbeat.pc-001",
        "results.req-1",
        "events.started.exec-1.pc-001",
        "obs.pc-001",
        "inventory.pc-001.hw",
        "$KV.agent_groups.pc-001",
        "$O.result_output.C.abc",
        "$O.result_output.M.abc",
        "$JS.API.STREAM.LIST",
        "$JS.API.CONSUMER.CREATE.EXEC.agent_pc-001",
        "$JS.API.CONSUMER.MSG.NEXT.EXEC.agent_pc-001",
        "$JS.ACK.EXEC.agent_pc-001.1.2.3.4.5.6",
        "$JS.API.DIRECT.GET.KV_script_status.$KV.script_status.job",
        "$JS.API.DIRECT.GET.KV_exec_kills.$KV.exec_kills.exec-1",
        "$JS.API.CONSUMER.CREATE.KV_agent_config.abc.$KV.agent_config.>",
        "$JS.API.CONSUMER.CREATE.OBJ_scripts.abc.$O.scripts.C.x",
        "$JS.FC.KV_script_current.abc",
    ] {
        assert!(allows(&p.publish, ok), "{ok} should be allowed");
    }
    for refused in [
        "commands.all",
        "commands.pc.pc-001",
        "commands.group.g",
        "kill.exec-1",
        "heartbeat.pc-002",
        "events.started.exec-1.pc-002",
        "obs.pc-002",
        "inventory.pc-002.hw",
        "$KV.agent_groups.pc-002",
        "$KV.script_status.job",
        "$KV.script_current.job",
        "$KV.agent_config.global",
        "$KV.exec_kills.exec-1",
        "$O.scripts.C.abc",
        "$JS.API.STREAM.CREATE.EXEC",
        "$JS.API.STREAM.DELETE.EXEC",
        "$JS.API.STREAM.PURGE.OBJ_result_output",
        "$JS.API.CONSUMER.CREATE.EXEC.agent_pc-002",
        "$JS.API.CONSUMER.CREATE.EXEC",
        "$JS.API.CONSUMER.MSG.NEXT.EXEC.agent_pc-002",
        "$JS.ACK.EXEC.agent_pc-002.1.2.3.4.5.6",
        "$JS.API.CONSUMER.DELETE.KV_script_status.x",
        "$JS.API.STREAM.INFO.KV_jobs",
        "audit.alice.exec",
    ] {
        assert!(!allows(&p.publish, refused), "{refused} should be refused");
    }
}

#[test]
fn an_agent_reads_only_its_command_subjects() {
    let p = agent_permissions(&pc("pc-001"));
    for ok in [
        "commands.all",
        "commands.group.canary",
        "commands.pc.pc-001",
        "kill.exec-1",
        "agents.pc-001.ping",
        "_INBOX_pc-001.abc.def",
    ] {
        assert!(allows(&p.subscribe, ok), "{ok} should be allowed");
    }
    for refused in [
        "commands.pc.pc-002",
        "commands.>",
        "agents.pc-002.ping",
        "results.req-1",
        "heartbeat.pc-002",
        // Other clients' replies: the shared prefix and another pc's.
        "_INBOX.abc.def",
        "_INBOX_pc-002.abc",
        ">",
    ] {
        assert!(
            !allows(&p.subscribe, refused),
            "{refused} should be refused"
        );
    }
}

#[test]
fn the_backend_may_do_everything() {
    let p = backend_permissions();
    assert!(allows(&p.publish, "commands.all"));
    assert!(allows(&p.subscribe, "results.x"));
}

#[test]
fn the_block_lists_every_identity_quoted() {
    let block = authorization_block("UBACKEND", &[(pc("pc-001"), "UAGENT1".to_owned())]);
    assert!(block.starts_with('#'));
    assert!(block.contains("authorization {\n  users = ["));
    assert!(block.contains("nkey: \"UBACKEND\""));
    assert!(block.contains("publish: { allow: [\n          \">\"\n        ] }"));
    assert!(block.contains("# agent pc-001\n    {\n      nkey: \"UAGENT1\""));
    assert!(block.contains("\n          \"$JS.ACK.EXEC.agent_pc-001.>\"\n"));
    assert!(block.contains(
        "subscribe: { allow: [\n          \"commands.all\"\n          \"commands.group.*\"\n          \
         \"commands.pc.pc-001\"\n          \"kill.*\"\n          \"agents.pc-001.ping\"\n          \
         \"_INBOX_pc-001.>\"\n        ] }"
    ));
    assert_eq!(block.matches("nkey:").count(), 2);
    assert_eq!(block.matches('{').count(), block.matches('}').count());
}

#[test]
fn generate_keeps_existing_seeds_and_adds_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nats");
    let first = generate(&out, &[pc("pc-001"), pc("pc-002")]).unwrap();
    assert_eq!(first.created, ["backend", "pc-001", "pc-002"]);
    assert_eq!(first.agents.len(), 2);
    let seed1 = std::fs::read_to_string(seed_path(&out, "pc-001")).unwrap();
    assert!(seed1.starts_with("SU"), "{seed1}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(seed_path(&out, "pc-001"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let second = generate(&out, &[pc("pc-003")]).unwrap();
    assert_eq!(second.created, ["pc-003"]);
    assert_eq!(second.backend, first.backend);
    assert_eq!(
        second
            .agents
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["pc-001", "pc-002", "pc-003"]
    );
    assert_eq!(second.agents[0], first.agents[0], "pc-001 kept its key");
    assert_eq!(
        std::fs::read_to_string(seed_path(&out, "pc-001")).unwrap(),
        seed1
    );
    let block = std::fs::read_to_string(&second.authorization).unwrap();
    for (_, key) in &second.agents {
        assert!(block.contains(key.as_str()));
    }
    assert_eq!(read_seed(&seed_path(&out, "pc-001")).unwrap(), seed1.trim());
    // The backend's map of who publishes as which pc follows the seeds.
    let identities = kanade_core::policy::publisher::PublisherIdentities::parse(
        &std::fs::read_to_string(&second.agent_identities).unwrap(),
    )
    .unwrap();
    assert_eq!(identities.len(), 3);
    for (pc, key) in &second.agents {
        assert_eq!(identities.key_for(pc.as_str()), Some(key.as_str()));
    }
    assert_eq!(identities.key_for("backend"), None);
}

#[test]
fn bad_names_and_seeds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        generate(dir.path(), &[pc("backend")]),
        Err(NatsAuthError::ReservedName)
    ));
    std::fs::write(dir.path().join("a.b.nk"), "x").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let exposed = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(dir.path().join("a.b.nk"), exposed).unwrap();
        let err = generate(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, NatsAuthError::Exposed { .. }), "{err}");
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.path().join("a.b.nk"), private).unwrap();
    }
    let err = generate(dir.path(), &[]).unwrap_err();
    assert!(
        err.to_string().contains("not a NATS user NKey seed"),
        "{err}"
    );
    // A valid seed under a name that is no pc id.
    std::fs::remove_file(dir.path().join("a.b.nk")).unwrap();
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &[]).unwrap();
    std::fs::copy(
        seed_path(other.path(), BACKEND_IDENTITY),
        dir.path().join("a.b.nk"),
    )
    .unwrap();
    let err = generate(dir.path(), &[]).unwrap_err();
    assert!(matches!(err, NatsAuthError::BadName { .. }), "{err}");
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    assert!(public_key(&account).is_err());
}
