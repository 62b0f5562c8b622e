//! Unit tests of the pure policies.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kanade_core::names::SubjectToken;
use kanade_core::policy::config::resolve;
use kanade_core::policy::exit_codes;
use kanade_core::policy::overflow::{cap_capture, plan_overflow};
use kanade_core::policy::retry::{self, next_attempt, AttemptOutcome, RetryDecision, RetryError};
use kanade_core::policy::script::{
    sha256_hex, verify_script_body, ScriptBodyError, MAX_SCRIPT_BYTES,
};
use kanade_core::policy::*;
use kanade_core::wire::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap()
}

fn command() -> Command {
    serde_json::from_str(
        r#"{"id":"job","version":"2","request_id":"r","shell":"sh","script":"true","timeout_secs":5}"#,
    )
    .unwrap()
}

struct World {
    host: HostSupport,
    current: Option<&'static str>,
    status: Option<&'static str>,
    fresh: Option<DateTime<Utc>>,
    delivery: Delivery,
}

impl World {
    fn ok() -> Self {
        Self {
            host: HostSupport::everything(),
            current: Some("2"),
            status: Some("ACTIVE"),
            fresh: Some(t(0)),
            delivery: Delivery::Broker,
        }
    }

    fn decide(&self, command: &Command, now: DateTime<Utc>) -> GateDecision {
        evaluate_gates(
            command,
            &GateInputs {
                now,
                fleet_now: now,
                delivery: self.delivery,
                last_fresh_at: self.fresh,
                script_current: self.current,
                script_status: self.status,
                host: &self.host,
            },
        )
    }

    fn code(&self, command: &Command, now: DateTime<Utc>) -> Option<i32> {
        match self.decide(command, now) {
            GateDecision::Run => None,
            GateDecision::Stop(stop) => {
                assert_eq!(stop.skipped, exit_codes::is_skip(stop.exit_code));
                Some(stop.exit_code)
            }
        }
    }
}

#[test]
fn a_clean_command_runs() {
    assert_eq!(World::ok().decide(&command(), t(0)), GateDecision::Run);
}

#[test]
fn each_gate_reports_its_code() {
    let strict = Command {
        staleness: Staleness::Strict {
            max_cache_age: "5m".into(),
        },
        ..command()
    };
    let world = World::ok();
    assert_eq!(
        world.code(&strict, t(300)),
        None,
        "exactly at the allowance is fresh"
    );
    assert_eq!(world.code(&strict, t(301)), Some(127));
    assert_eq!(
        World {
            fresh: None,
            ..World::ok()
        }
        .code(&strict, t(0)),
        Some(127)
    );

    assert_eq!(
        World {
            current: Some("3"),
            ..World::ok()
        }
        .code(&command(), t(0)),
        Some(124)
    );
    assert_eq!(
        World {
            current: None,
            ..World::ok()
        }
        .code(&command(), t(0)),
        None
    );
    assert_eq!(
        World {
            status: Some("REVOKED"),
            ..World::ok()
        }
        .code(&command(), t(0)),
        Some(126)
    );

    let no_bash = HostSupport {
        shells: vec![Shell::Sh],
        interactive_sessions: false,
    };
    let world = World {
        host: no_bash,
        ..World::ok()
    };
    let bash = Command {
        shell: Shell::Bash,
        ..command()
    };
    assert_eq!(world.code(&bash, t(0)), Some(122));
    let gui = Command {
        run_as: RunAs::SystemGui,
        ..command()
    };
    assert_eq!(world.code(&gui, t(0)), Some(122));
    let user = Command {
        run_as: RunAs::User,
        ..command()
    };
    assert_eq!(world.code(&user, t(0)), Some(122));

    let late = Command {
        deadline_at: Some(t(10)),
        ..command()
    };
    assert_eq!(
        World::ok().code(&late, t(10)),
        None,
        "at the deadline still runs"
    );
    assert_eq!(World::ok().code(&late, t(11)), Some(125));
}

#[test]
fn gates_run_in_the_documented_order() {
    let everything_wrong = Command {
        staleness: Staleness::Strict {
            max_cache_age: "1s".into(),
        },
        shell: Shell::Cmd,
        deadline_at: Some(t(0)),
        ..command()
    };
    let mut world = World {
        host: HostSupport {
            shells: vec![Shell::Sh],
            interactive_sessions: false,
        },
        current: Some("other"),
        status: Some("REVOKED"),
        fresh: None,
        delivery: Delivery::Broker,
    };
    let now = t(60);
    assert_eq!(world.code(&everything_wrong, now), Some(127));
    world.fresh = Some(now);
    assert_eq!(world.code(&everything_wrong, now), Some(124));
    world.current = Some("2");
    assert_eq!(world.code(&everything_wrong, now), Some(126));
    world.status = None;
    assert_eq!(world.code(&everything_wrong, now), Some(122));
    world.host = HostSupport::everything();
    assert_eq!(world.code(&everything_wrong, now), Some(125));
}

#[test]
fn version_pin_applies_only_to_broker_delivery() {
    let world = World {
        current: Some("9"),
        delivery: Delivery::Local,
        ..World::ok()
    };
    assert_eq!(world.code(&command(), t(0)), None);
}

#[test]
fn unchecked_skips_pin_and_revoke_but_not_deadline() {
    let unchecked = Command {
        staleness: Staleness::Unchecked,
        ..command()
    };
    let world = World {
        current: Some("9"),
        status: Some("REVOKED"),
        fresh: None,
        ..World::ok()
    };
    assert_eq!(world.code(&unchecked, t(0)), None);
    let late = Command {
        deadline_at: Some(t(0)),
        ..unchecked
    };
    assert_eq!(world.code(&late, t(1)), Some(125));
}

#[test]
fn malformed_max_cache_age_fails_closed() {
    assert_eq!(gates::max_cache_age("five minutes"), Duration::ZERO);
    assert_eq!(gates::max_cache_age("5m"), Duration::from_secs(300));
    let strict = Command {
        staleness: Staleness::Strict {
            max_cache_age: "garbage".into(),
        },
        ..command()
    };
    let world = World::ok();
    assert_eq!(
        world.code(&strict, t(1)),
        Some(127),
        "one second old is stale at 0s"
    );
    assert_eq!(
        world.code(&strict, t(0)),
        None,
        "connected right now is fresh"
    );
    match world.decide(&strict, t(1)) {
        GateDecision::Stop(stop) => {
            assert!(
                stop.reason.to_string().contains("strict staleness"),
                "{}",
                stop.reason
            )
        }
        GateDecision::Run => panic!("must stop"),
    }
}

#[test]
fn reserved_codes_have_fixed_skip_flags() {
    let skips: Vec<i32> = exit_codes::ALL
        .into_iter()
        .filter(|c| exit_codes::is_skip(*c))
        .collect();
    assert_eq!(skips, [122, 124, 125, 126, 127]);
    for failure in [-1, 121, 123, 0, 1, 2] {
        assert!(!exit_codes::is_skip(failure));
    }
}

#[test]
fn retry_validation_bounds() {
    for max in 1..=10 {
        assert_eq!(
            retry::validate(&RetrySpec {
                max,
                backoff_secs: 1
            }),
            Ok(())
        );
    }
    for max in [0, 11, u32::MAX] {
        let err = retry::validate(&RetrySpec {
            max,
            backoff_secs: 1,
        })
        .unwrap_err();
        assert_eq!(err, RetryError::MaxOutOfRange { max });
        assert!(err.to_string().contains("between 1 and 10"), "{err}");
    }
}

#[test]
fn retry_decisions() {
    let spec = RetrySpec {
        max: 2,
        backoff_secs: 7,
    };
    let again = RetryDecision::RetryAfter(Duration::from_secs(7));
    assert_eq!(
        next_attempt(Some(&spec), 1, AttemptOutcome::Exited(1)),
        again
    );
    assert_eq!(
        next_attempt(Some(&spec), 2, AttemptOutcome::TimedOut),
        again
    );
    assert_eq!(
        next_attempt(Some(&spec), 3, AttemptOutcome::Exited(1)),
        RetryDecision::Finish
    );
    assert_eq!(
        next_attempt(Some(&spec), 1, AttemptOutcome::Exited(0)),
        RetryDecision::Finish
    );
    assert_eq!(
        next_attempt(Some(&spec), 1, AttemptOutcome::Killed),
        RetryDecision::Finish
    );
    assert_eq!(
        next_attempt(None, 1, AttemptOutcome::Exited(1)),
        RetryDecision::Finish
    );
    let huge = RetrySpec {
        max: 1000,
        backoff_secs: 0,
    };
    assert_eq!(
        next_attempt(Some(&huge), 11, AttemptOutcome::Exited(1)),
        RetryDecision::Finish
    );
}

fn scope(interval: &str) -> AgentConfigScope {
    AgentConfigScope {
        heartbeat_interval: Some(interval.into()),
        ..Default::default()
    }
}

#[test]
fn config_layers_in_order() {
    let global = AgentConfigScope {
        heartbeat_interval: Some("40s".into()),
        process_perf_top_n: Some(5),
        ..Default::default()
    };
    let groups = BTreeMap::from([
        ("zeta".to_owned(), scope("3s")),
        ("alpha".to_owned(), scope("1s")),
        (
            "unrelated".to_owned(),
            AgentConfigScope {
                max_local_concurrent: NonZeroU32::new(99),
                ..Default::default()
            },
        ),
    ]);
    let mine = ["zeta".to_owned(), "alpha".to_owned()];
    let resolved = resolve(Some(&global), &groups, &mine, None);
    assert_eq!(
        resolved.heartbeat_interval, "3s",
        "alphabetically last group wins"
    );
    assert_eq!(
        resolved.process_perf_top_n, 5,
        "global applies where groups are silent"
    );
    assert_eq!(
        resolved.max_local_concurrent, None,
        "other groups do not apply"
    );
    assert_eq!(resolved.target_version_jitter, "10m", "built-in default");
    let pc = scope("9s");
    assert_eq!(
        resolve(Some(&global), &groups, &mine, Some(&pc)).heartbeat_interval,
        "9s"
    );
    assert_eq!(
        resolve(None, &BTreeMap::new(), &[], None),
        EffectiveConfig::default()
    );
    assert_eq!(resolved.heartbeat_period(), Duration::from_secs(3));
}

#[test]
fn script_body_checks() {
    let body = b"echo hi\n";
    let digest = sha256_hex(body);
    assert_eq!(verify_script_body(body, &digest), Ok("echo hi\n"));
    assert_eq!(
        verify_script_body(body, &digest.to_uppercase()),
        Ok("echo hi\n")
    );
    assert!(matches!(
        verify_script_body(b"echo bye\n", &digest),
        Err(ScriptBodyError::DigestMismatch { .. })
    ));
    assert!(matches!(
        verify_script_body(body, "abc"),
        Err(ScriptBodyError::MalformedDigest { .. })
    ));
    let big = vec![b'a'; MAX_SCRIPT_BYTES + 1];
    assert!(matches!(
        verify_script_body(&big, &sha256_hex(&big)),
        Err(ScriptBodyError::TooLarge { len, .. }) if len == MAX_SCRIPT_BYTES + 1
    ));
    let exactly = vec![b'a'; MAX_SCRIPT_BYTES];
    assert!(verify_script_body(&exactly, &sha256_hex(&exactly)).is_ok());
    let latin1 = b"caf\xe9";
    assert_eq!(
        verify_script_body(latin1, &sha256_hex(latin1)),
        Err(ScriptBodyError::NotUtf8 { valid_up_to: 3 })
    );
}

#[test]
fn overflow_plan_and_capture_cap() {
    let request = SubjectToken::new(kanade_core::names::TokenKind::RequestId, "req-1").unwrap();
    let pc = SubjectToken::pc("pc-1").unwrap();
    let limit = kanade_core::names::STDOUT_INLINE_THRESHOLD;
    let plan = plan_overflow(&request, &pc, limit + 1, limit);
    assert_eq!(plan.stdout_object.as_deref(), Some("req-1/pc-1/stdout"));
    assert_eq!(plan.stderr_object, None);
    let plan = plan_overflow(&request, &pc, 0, 10 * limit);
    assert_eq!(plan.stderr_object.as_deref(), Some("req-1/pc-1/stderr"));

    assert_eq!(cap_capture(b"short", 10), b"short");
    let long: Vec<u8> = (0..100u8).collect();
    let capped = cap_capture(&long, 10);
    assert_eq!(&capped[..5], &long[..5]);
    assert_eq!(&capped[capped.len() - 5..], &long[95..]);
    let marker = String::from_utf8_lossy(&capped[5..capped.len() - 5]);
    assert!(marker.contains("100 bytes in all"), "{marker}");
}
