//! Property tests: every wire type round-trips, no input panics a decoder,
//! and the gate and layering policies hold their safety properties.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::num::NonZeroU32;

use chrono::{DateTime, TimeZone, Utc};
use kanade_core::policy::config::resolve;
use kanade_core::policy::*;
use kanade_core::wire::*;
use proptest::option::of;
use proptest::prelude::*;
use serde_json::Value;

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn shell() -> impl Strategy<Value = Shell> {
    proptest::sample::select(Shell::ALL.to_vec())
}

fn run_as() -> impl Strategy<Value = RunAs> {
    prop_oneof![
        Just(RunAs::System),
        Just(RunAs::User),
        Just(RunAs::SystemGui)
    ]
}

fn staleness() -> impl Strategy<Value = Staleness> {
    prop_oneof![
        Just(Staleness::Cached),
        Just(Staleness::Unchecked),
        prop_oneof![Just("5m".to_owned()), Just("0s".to_owned()), text()]
            .prop_map(|max_cache_age| Staleness::Strict { max_cache_age }),
    ]
}

fn check_hint() -> impl Strategy<Value = CheckHint> {
    (
        text(),
        of(text()),
        text(),
        text(),
        of(text()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(name, label, status_field, detail_field, troubleshoot, fleet, health)| CheckHint {
                name,
                label,
                status_field,
                detail_field,
                troubleshoot,
                fleet,
                health,
                alert: None,
            },
        )
}

fn command() -> impl Strategy<Value = Command> {
    let ids = (text(), text(), text(), of(text()), shell(), text());
    let body = (
        of(text()),
        of("[0-9a-f]{64}"),
        any::<u64>(),
        of(any::<u64>()),
        run_as(),
        of(text()),
    );
    let policy = (
        of(time()),
        staleness(),
        of(Just(EmitConfig {
            kind: EmitKind::Events,
        })),
        of(check_hint()),
        of((any::<u32>(), any::<u64>())
            .prop_map(|(max, backoff_secs)| RetrySpec { max, backoff_secs })),
    );
    (ids, body, policy).prop_map(
        |(
            (id, version, request_id, exec_id, shell, script),
            (script_object, script_object_sha256, timeout_secs, jitter_secs, run_as, cwd),
            (deadline_at, staleness, emit, check, retry),
        )| Command {
            id,
            version,
            request_id,
            exec_id,
            shell,
            script,
            script_object,
            script_object_sha256,
            timeout_secs,
            jitter_secs,
            run_as,
            cwd,
            // Round-trips like any optional time.
            issued_at: deadline_at,
            kitting: timeout_secs % 2 == 0,
            deadline_at,
            staleness,
            emit,
            check,
            retry,
        },
    )
}

fn exec_result() -> impl Strategy<Value = ExecResult> {
    let head = (
        text(),
        text(),
        of(text()),
        text(),
        any::<i32>(),
        any::<bool>(),
        text(),
        text(),
    );
    let tail = (
        time(),
        time(),
        of(text()),
        of(text()),
        of(text()),
        1u32..=11,
    );
    (head, tail).prop_map(
        |(
            (result_id, request_id, exec_id, pc_id, exit_code, skipped, stdout, stderr),
            (started_at, finished_at, stdout_object, stderr_object, manifest_id, attempts),
        )| ExecResult {
            result_id,
            request_id,
            exec_id,
            pc_id,
            exit_code,
            skipped,
            stdout,
            stderr,
            started_at,
            finished_at,
            stdout_object,
            stderr_object,
            manifest_id,
            attempts,
        },
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    let required = (text(), time(), text());
    let optional = (
        of(text()),
        of(text()),
        of(text()),
        of((0u32..20_000).prop_map(|n| n as f32 * 0.5)),
        of(any::<u64>()),
        of(any::<bool>()),
        of(prop::collection::vec(text(), 0..3)),
        of(prop::collection::vec(text(), 0..3)),
    );
    (required, optional).prop_map(
        |(
            (pc_id, at, agent_version),
            (
                hostname,
                os_family,
                agent_arch,
                agent_cpu_pct,
                agent_rss_bytes,
                enforcing,
                command_keys,
                quarantined_versions,
            ),
        )| Heartbeat {
            pc_id,
            at,
            agent_version,
            hostname,
            os_family,
            agent_arch,
            agent_cpu_pct,
            agent_rss_bytes,
            enforcing,
            command_keys,
            quarantined_versions,
        },
    )
}

fn scope() -> impl Strategy<Value = AgentConfigScope> {
    (
        of(any::<u32>().prop_filter_map("non-zero", NonZeroU32::new)),
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(any::<bool>()),
        of(time()),
        of(any::<u32>()),
        of(text()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i)| AgentConfigScope {
            max_local_concurrent: a,
            target_version: b,
            target_version_jitter: c,
            heartbeat_interval: d,
            host_perf_interval: e,
            process_perf_enabled: f,
            process_perf_expires_at: g,
            process_perf_top_n: h,
            client_display_name: i,
        })
}

fn assert_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

proptest! {
    #[test]
    fn command_round_trips(value in command()) { assert_round_trip(&value)?; }

    #[test]
    fn exec_result_round_trips(value in exec_result()) { assert_round_trip(&value)?; }

    #[test]
    fn heartbeat_round_trips(value in heartbeat()) { assert_round_trip(&value)?; }

    #[test]
    fn event_started_round_trips(
        (result_id, request_id, exec_id, pc_id, started_at, manifest_id, version)
            in (text(), text(), of(text()), text(), time(), of(text()), of(text()))
    ) {
        assert_round_trip(&EventStarted { result_id, request_id, exec_id, pc_id, started_at, manifest_id, version })?;
    }

    #[test]
    fn obs_and_audit_round_trip(
        (pc_id, at, kind, source, event_record_id, payload) in (text(), time(), text(), text(), of(any::<u64>()), json_value()),
        (target, prev_hash, hash) in (of(text()), "[0-9a-f]{0,64}", "[0-9a-f]{64}"),
        (seq, origin, outcome, params_sha256) in (of(any::<u64>()), of((of(text()), text())), of(text()), of("[0-9a-f]{64}")),
    ) {
        assert_round_trip(&ObsEvent { pc_id: pc_id.clone(), at, kind: kind.clone(), source: source.clone(), event_record_id, payload: payload.clone() })?;
        let origin = origin.map(|(ip, kind)| AuditSource { ip, kind });
        assert_round_trip(&AuditEvent { id: pc_id, seq, at, actor: kind, source: origin, action: source, target, outcome, params_sha256, details: payload, prev_hash, hash })?;
    }

    #[test]
    fn inventories_round_trip(
        (pc_id, at, hostname, cpu_cores, memory_bytes) in (text(), time(), of(text()), of(any::<u32>()), of(any::<u64>())),
        disks in prop::collection::vec((text(), any::<u64>(), any::<u64>()), 0..3),
        packages in prop::collection::vec((text(), text(), of(text())), 0..3),
        interfaces in prop::collection::vec((text(), of(text()), prop::collection::vec(text(), 0..2)), 0..3),
    ) {
        assert_round_trip(&HwInventory {
            pc_id: pc_id.clone(), at, hostname: hostname.clone(), os_name: hostname.clone(), os_version: None,
            kernel_version: hostname, cpu_model: None, cpu_cores, memory_bytes,
            disks: disks.into_iter().map(|(mount, total_bytes, available_bytes)| Disk { mount, total_bytes, available_bytes }).collect(),
        })?;
        assert_round_trip(&SwInventory {
            pc_id: pc_id.clone(), at,
            packages: packages.into_iter().map(|(name, version, publisher)| SoftwarePackage { name, version, publisher }).collect(),
        })?;
        assert_round_trip(&NetInventory {
            pc_id, at,
            interfaces: interfaces.into_iter().map(|(name, mac, addresses)| NetInterface { name, mac, addresses }).collect(),
        })?;
    }

    #[test]
    fn groups_and_config_round_trip(
        groups in prop::collection::vec("[a-z]{0,4}", 0..6),
        layer in scope(),
    ) {
        let groups = AgentGroups::new(groups);
        prop_assert!(groups.groups().windows(2).all(|w| w[0] < w[1]));
        assert_round_trip(&groups)?;
        assert_round_trip(&layer)?;
        assert_round_trip(&config::apply(EffectiveConfig::default(), &layer))?;
    }

    /// Arbitrary bytes never panic a decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Command>(&bytes);
        let _ = serde_json::from_slice::<ExecResult>(&bytes);
        let _ = serde_json::from_slice::<Heartbeat>(&bytes);
        let _ = serde_json::from_slice::<AgentGroups>(&bytes);
        let _ = serde_json::from_slice::<AgentConfigScope>(&bytes);
        let _ = serde_json::from_slice::<AuditEvent>(&bytes);
    }

    /// A valid command with any one field replaced by any JSON value decodes
    /// or errors, never panics.
    #[test]
    fn corrupted_fields_never_panic(original in command(), key_index in 0usize..17, junk in json_value()) {
        let mut value = serde_json::to_value(&original).unwrap();
        let object = value.as_object_mut().unwrap();
        let key = object.keys().nth(key_index % object.len()).unwrap().clone();
        object.insert(key, junk);
        let _ = serde_json::from_value::<Command>(value);
    }

    /// A revoked command never runs unless its staleness is `unchecked`.
    #[test]
    fn revoked_never_runs_unless_unchecked(
        cmd in command(), now in time(), fresh in of(time()), current in of(text()),
        broker in any::<bool>(),
    ) {
        let host = HostSupport::everything();
        let decision = evaluate_gates(&cmd, &GateInputs {
            now,
            fleet_now: now,
            delivery: if broker { Delivery::Broker } else { Delivery::Local },
            last_fresh_at: fresh,
            script_current: current.as_deref(),
            script_status: Some("REVOKED"),
            host: &host,
        });
        if cmd.staleness != Staleness::Unchecked {
            prop_assert!(!decision.is_run());
        }
    }

    /// A command past its deadline never runs, whatever else holds.
    #[test]
    fn past_deadline_never_runs(
        mut cmd in command(), deadline in time(), late_by_ns in 1i64..1_000_000_000_000,
        fresh in of(time()), status in of(prop_oneof![Just("ACTIVE".to_owned()), text()]),
    ) {
        cmd.deadline_at = Some(deadline);
        let now = deadline + chrono::Duration::nanoseconds(late_by_ns);
        let host = HostSupport::everything();
        let decision = evaluate_gates(&cmd, &GateInputs {
            now,
            fleet_now: now,
            delivery: Delivery::Local,
            last_fresh_at: fresh,
            script_current: None,
            script_status: status.as_deref(),
            host: &host,
        });
        match decision {
            GateDecision::Run => prop_assert!(false, "ran past its deadline"),
            GateDecision::Stop(stop) => prop_assert!(stop.skipped),
        }
    }

    /// For every field: `pcs` beats every group, the alphabetically last of the
    /// pc's groups beats earlier ones and `global`, `global` beats the default.
    #[test]
    fn pcs_over_groups_over_global_for_every_field(
        global in of(scope()),
        all_groups in prop::collection::btree_map("[a-d]", scope(), 0..4),
        mine in prop::collection::vec("[a-e]", 0..4),
        pc in of(scope()),
    ) {
        let effective = serde_json::to_value(resolve(global.as_ref(), &all_groups, &mine, pc.as_ref())).unwrap();
        let defaults = serde_json::to_value(EffectiveConfig::default()).unwrap();
        let as_map = |s: &AgentConfigScope| serde_json::to_value(s).unwrap();
        let mut sorted: Vec<&String> = mine.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut precedence: Vec<Value> = pc.iter().map(as_map).collect();
        precedence.extend(sorted.iter().rev().filter_map(|g| all_groups.get(*g)).map(as_map));
        precedence.extend(global.iter().map(as_map));
        for (field, actual) in effective.as_object().unwrap() {
            let expected = precedence
                .iter()
                .find_map(|layer| layer.get(field).cloned())
                .unwrap_or_else(|| defaults[field].clone());
            prop_assert_eq!(actual, &expected, "field {}", field);
        }
        prop_assert_eq!(effective.as_object().unwrap().len(), 9);
    }
}

#[test]
fn layering_covers_every_scope_field() {
    let scope_fields = serde_json::to_value(AgentConfigScope {
        max_local_concurrent: NonZeroU32::new(1),
        target_version: Some(String::new()),
        target_version_jitter: Some(String::new()),
        heartbeat_interval: Some(String::new()),
        host_perf_interval: Some(String::new()),
        process_perf_enabled: Some(true),
        process_perf_expires_at: Some(Utc.timestamp_opt(0, 0).unwrap()),
        process_perf_top_n: Some(1),
        client_display_name: Some(String::new()),
    })
    .unwrap();
    let effective_fields = serde_json::to_value(EffectiveConfig::default()).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&scope_fields), keys(&effective_fields));
}
