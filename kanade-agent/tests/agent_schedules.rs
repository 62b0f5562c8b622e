//! Agent-side schedules (`runs_on: agent`) over the memory transport under
//! paused tokio time: a calendar fire while the broker is unreachable is
//! delivered once on reconnect; a startup trigger fires once per boot; an
//! occurrence missed while the agent was off is skipped with 125; the
//! freeze holds fires; an enforcing agent refuses an unsigned or forged
//! schedule.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kanade_core::names::BUCKET_AGENT_SCHEDULES;
use kanade_core::policy::signature::{CommandSigner, KeyRing};
use kanade_core::policy::signed::SignedDocument;
use kanade_core::transport::fault::{FaultPlan, FaultRates, FaultyTransport};
use kanade_core::transport::{KvConfig, Subscription, Transport};
use kanade_core::wire::{AgentSchedule, AgentTarget, FleetFreeze, FREEZE_KEY};

fn signer() -> CommandSigner {
    CommandSigner::from_seed("k1", [9; 32])
}

fn ring() -> KeyRing {
    KeyRing::from_entries(vec![signer().ring_entry(None, Some(300))]).unwrap()
}

/// A schedule of `when` for pc-1 running `exit=0`.
fn schedule(id: &str, when: serde_json::Value) -> AgentSchedule {
    let mut command = command("", "exit=0");
    command.exec_id = None;
    AgentSchedule {
        schedule_id: id.into(),
        when: serde_json::from_value(when).unwrap(),
        target: AgentTarget {
            pcs: vec!["pc-1".into()],
            ..AgentTarget::default()
        },
        tz: None,
        enabled: true,
        active_from: None,
        active_until: None,
        window: None,
        skip_dates: vec![],
        starting_deadline_secs: Some(600),
        command,
    }
}

async fn put(
    transport: &Arc<dyn Transport>,
    key: &str,
    body: String,
    signer: Option<&CommandSigner>,
) {
    let doc = SignedDocument::new(body, signer, 1_780_000_000_000);
    transport
        .key_value(KvConfig::new(BUCKET_AGENT_SCHEDULES))
        .await
        .unwrap()
        .put(key, serde_json::to_vec(&doc).unwrap().into())
        .await
        .unwrap();
}

async fn put_schedule(transport: &Arc<dyn Transport>, schedule: &AgentSchedule) {
    let body = serde_json::to_string(schedule).unwrap();
    put(transport, &schedule.schedule_id, body, Some(&signer())).await;
}

/// An agent on `transport` that trusts [`ring`] (enforcing when asked).
async fn agent(
    transport: Arc<dyn Transport>,
    state: tempfile::TempDir,
    boot: &str,
    enforce: bool,
) -> Harness {
    agent_on_clock(transport, state, boot, enforce, clock()).await
}

/// A bus with `schedule` published and results listened to, and agent
/// boot `b` started on a clock its restart can share.
async fn started_with(
    schedule: &AgentSchedule,
    enforce: bool,
) -> (
    Arc<dyn Transport>,
    Subscription,
    Arc<kanade_agent::TokioClock>,
    Harness,
) {
    let memory = memory();
    let results = results(&memory).await;
    put_schedule(&memory, schedule).await;
    let clock = clock();
    let h = agent_on_clock(
        memory.clone(),
        tempfile::tempdir().unwrap(),
        "b",
        enforce,
        clock.clone(),
    )
    .await;
    (memory, results, clock, h)
}

/// [`agent`] on `clock` (shared by an agent and its restart, so time goes
/// on across the restart).
async fn agent_on_clock(
    transport: Arc<dyn Transport>,
    state: tempfile::TempDir,
    boot: &str,
    enforce: bool,
    clock: Arc<kanade_agent::TokioClock>,
) -> Harness {
    let boot = boot.to_owned();
    Harness::start_full(
        transport,
        state,
        move |settings| {
            settings.boot_id = Some(boot);
            settings.trust.ring = Some(ring());
            if enforce {
                settings.trust.mode = kanade_agent::trust::SignatureMode::Enforce;
            }
        },
        move |builder| builder.clock(clock),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_calendar_fire_while_the_broker_is_down_is_delivered_once_on_reconnect() {
    let memory = memory();
    let mut results = results(&memory).await;
    let faulty = FaultyTransport::new(memory.clone(), FaultPlan::Random(FaultRates::none(1)));
    let injector = faulty.injector();
    // The agent's clock starts at 09:00 UTC; the schedule fires at 09:30.
    put_schedule(
        &memory,
        &schedule("daily", serde_json::json!({"calendar": {"at": "09:30"}})),
    )
    .await;
    let h = agent(Arc::new(faulty), tempfile::tempdir().unwrap(), "b1", true).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    injector.disconnect();
    tokio::time::sleep(Duration::from_secs(40 * 60)).await;
    assert_eq!(
        h.runner.runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fired offline"
    );
    assert_quiet(&mut results, Duration::from_secs(1)).await;
    assert!(
        !h.agent.outbox().backlog().is_empty(),
        "the result is kept for the broker"
    );
    injector.reconnect();
    let result = next_result(&mut results).await;
    let occurrence = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 6, 1, 9, 30, 0)
        .unwrap()
        .timestamp();
    assert_eq!(
        result.exec_id.as_deref(),
        Some(format!("sched-daily-{occurrence}").as_str())
    );
    assert_eq!((result.exit_code, result.skipped), (0, false));
    assert_quiet(&mut results, Duration::from_secs(600)).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_startup_trigger_fires_once_per_boot() {
    let memory = memory();
    let mut results = results(&memory).await;
    put_schedule(
        &memory,
        &schedule("boot", serde_json::json!({"on": ["startup"]})),
    )
    .await;
    let h = agent(
        memory.clone(),
        tempfile::tempdir().unwrap(),
        "boot-1",
        false,
    )
    .await;
    let first = next_result(&mut results).await;
    assert!(first.exec_id.unwrap().starts_with("sched-boot-"));
    // Restarted in the same boot: nothing; in the next boot: once more.
    let state = h.stop().await;
    let h = agent(memory.clone(), state, "boot-1", false).await;
    assert_quiet(&mut results, Duration::from_secs(120)).await;
    let state = h.stop().await;
    let h = agent(memory.clone(), state, "boot-2", false).await;
    let second = next_result(&mut results).await;
    assert_eq!(second.exit_code, 0);
    assert_quiet(&mut results, Duration::from_secs(120)).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_occurrence_missed_while_off_is_skipped_with_125() {
    let (memory, mut results, clock, h) = started_with(
        &schedule("daily", serde_json::json!({"calendar": {"at": "09:30"}})),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    let state = h.stop().await;
    // Off from 09:10 until about 10:10: 09:30 passed, and its 10-minute
    // start deadline with it.
    tokio::time::sleep(Duration::from_secs(60 * 60)).await;
    let h = agent_on_clock(memory.clone(), state, "b", false, clock).await;
    let late = next_result(&mut results).await;
    assert_eq!((late.exit_code, late.skipped), (125, true), "{late:?}");
    assert_quiet(&mut results, Duration::from_secs(600)).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_freeze_holds_a_fire_until_it_lifts() {
    let memory = memory();
    let mut results = results(&memory).await;
    let freeze = |frozen| {
        serde_json::to_string(&FleetFreeze {
            frozen,
            until: None,
        })
        .unwrap()
    };
    put(&memory, FREEZE_KEY, freeze(true), Some(&signer())).await;
    put_schedule(
        &memory,
        &schedule("hourly", serde_json::json!({"per_pc": {"every": "1h"}})),
    )
    .await;
    let h = agent(memory.clone(), tempfile::tempdir().unwrap(), "b", true).await;
    assert_quiet(&mut results, Duration::from_secs(300)).await;
    put(&memory, FREEZE_KEY, freeze(false), Some(&signer())).await;
    assert_eq!(next_result(&mut results).await.exit_code, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_enforcing_agent_refuses_unsigned_and_forged_schedules() {
    let memory = memory();
    let mut results = results(&memory).await;
    let body =
        serde_json::to_string(&schedule("a", serde_json::json!({"on": ["startup"]}))).unwrap();
    put(&memory, "a", body, None).await;
    let forger = CommandSigner::from_seed("k1", [1; 32]);
    let body =
        serde_json::to_string(&schedule("b", serde_json::json!({"on": ["startup"]}))).unwrap();
    put(&memory, "b", body, Some(&forger)).await;
    // A genuine one named under another key is not taken either.
    let body =
        serde_json::to_string(&schedule("c", serde_json::json!({"on": ["startup"]}))).unwrap();
    put(&memory, "d", body, Some(&signer())).await;
    let h = agent(memory.clone(), tempfile::tempdir().unwrap(), "b", true).await;
    assert_quiet(&mut results, Duration::from_secs(300)).await;
    assert_eq!(h.runner.runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fire_waiting_out_its_jitter_survives_a_crash_on_an_enforcing_agent() {
    let mut waiting = schedule("boot", serde_json::json!({"on": ["startup"]}));
    waiting.command.jitter_secs = Some(600);
    let (memory, mut results, clock, h) = started_with(&waiting, true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = h.crash().await;
    // The restart re-checks what was admitted: a local fire has no
    // signature of its own, and must not be refused for it (123).
    let h = agent_on_clock(memory.clone(), state, "b", true, clock).await;
    let result = next_result(&mut results).await;
    assert_eq!((result.exit_code, result.skipped), (0, false), "{result:?}");
    assert_quiet(&mut results, Duration::from_secs(3600)).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_freeze_that_does_not_verify_holds_fires_on_an_enforcing_agent() {
    let memory = memory();
    let mut results = results(&memory).await;
    let lifted = serde_json::to_string(&FleetFreeze::default()).unwrap();
    put(&memory, FREEZE_KEY, lifted.clone(), None).await;
    put_schedule(
        &memory,
        &schedule("once", serde_json::json!({"per_pc": "once"})),
    )
    .await;
    let h = agent(memory.clone(), tempfile::tempdir().unwrap(), "b", true).await;
    assert_quiet(&mut results, Duration::from_secs(300)).await;
    put(&memory, FREEZE_KEY, lifted, Some(&signer())).await;
    let result = next_result(&mut results).await;
    assert_eq!(result.exec_id.as_deref(), Some("sched-once-once"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_schedule_deleted_while_the_agent_was_away_does_not_fire() {
    let (memory, mut results, clock, h) = started_with(
        &schedule("hourly", serde_json::json!({"per_pc": {"every": "1h"}})),
        false,
    )
    .await;
    next_result(&mut results).await;
    let state = h.stop().await;
    memory
        .key_value(KvConfig::new(BUCKET_AGENT_SCHEDULES))
        .await
        .unwrap()
        .delete("hourly")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let h = agent_on_clock(memory.clone(), state, "b", false, clock).await;
    assert_quiet(&mut results, Duration::from_secs(2 * 3600)).await;
    h.stop().await;
}
