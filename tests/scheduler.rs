//! The scheduler on a manual clock: each `when` form fires when it should
//! and not otherwise, nothing fires twice (also across a restart), freeze
//! stops scheduled fires only, and deadline / retry / jitter are lowered.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings, Scheduler};
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::{Subscription, Transport};
use kanade::core::wire::{Command, Heartbeat};

struct Setup {
    transport: Arc<dyn Transport>,
    dir: tempfile::TempDir,
    backend: Backend,
    clock: Arc<Mutex<DateTime<Utc>>>,
    scheduler: Scheduler,
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn setup() -> Setup {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(
        transport.clone(),
        BackendSettings::new(dir.path().join("db")),
    )
    .await
    .unwrap();
    backend
        .apply_job(
            "id: job\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let clock = Arc::new(Mutex::new(utc("2026-06-01T08:59:00Z")));
    let scheduler = scheduler_for(&backend, &clock);
    Setup {
        transport,
        dir,
        backend,
        clock,
        scheduler,
    }
}

fn scheduler_for(backend: &Backend, clock: &Arc<Mutex<DateTime<Utc>>>) -> Scheduler {
    let clock = clock.clone();
    Scheduler::with_clock(
        backend.clone(),
        Arc::new(move || *clock.lock().unwrap()),
        Duration::from_secs(1),
    )
}

impl Setup {
    fn set(&self, at: &str) {
        *self.clock.lock().unwrap() = utc(at);
    }

    fn online(&self, pcs: &[&str]) {
        for pc in pcs {
            self.backend
                .db()
                .upsert_agent(
                    &Heartbeat {
                        pc_id: (*pc).to_owned(),
                        at: Utc::now(),
                        agent_version: "test".into(),
                        hostname: None,
                        os_family: None,
                        agent_arch: None,
                        agent_cpu_pct: None,
                        agent_rss_bytes: None,
                        enforcing: None,
                        command_keys: None,
                        quarantined_versions: None,
                    },
                    Utc::now(),
                )
                .unwrap();
        }
    }

    /// Stores a result for `pc` in the newest execution.
    fn complete(&self, pc: &str) {
        let exec_id = self.backend.db().executions().unwrap()[0].exec_id.clone();
        let result: kanade::core::wire::ExecResult = serde_json::from_value(serde_json::json!({
            "result_id": format!("{exec_id}-{pc}"), "request_id": "r", "exec_id": exec_id, "pc_id": pc,
            "exit_code": 0, "skipped": false, "stdout": "", "stderr": "",
            "started_at": "2026-06-01T09:00:00Z", "finished_at": "2026-06-01T09:00:01Z",
        }))
        .unwrap();
        self.backend.db().store_result(&result, false).unwrap();
    }

    async fn schedule(&self, yaml: &str) {
        self.backend.apply_schedule(yaml).await.unwrap();
    }

    async fn tick(&self) -> Vec<String> {
        self.scheduler.tick_once().await.unwrap()
    }
}

async fn commands(transport: &Arc<dyn Transport>) -> Subscription {
    transport.messages().subscribe("commands.>").await.unwrap()
}

async fn next_command(sub: &mut Subscription) -> (String, Command) {
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    (
        message.subject.clone(),
        serde_json::from_slice(&message.payload).unwrap(),
    )
}

#[tokio::test]
async fn a_calendar_schedule_fires_once_at_its_time() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule("id: morning\njob_id: job\nwhen:\n  calendar:\n    at: \"09:00\"\n    days: [mon-fri]\ntarget:\n  all: true\n").await;
    assert!(
        s.tick().await.is_empty(),
        "first sight only starts the cursor"
    );
    s.set("2026-06-01T08:59:59Z");
    assert!(s.tick().await.is_empty());
    s.set("2026-06-01T09:00:01Z");
    assert_eq!(s.tick().await.len(), 1, "Monday 09:00 fires");
    s.set("2026-06-01T09:30:00Z");
    assert!(s.tick().await.is_empty(), "not twice");
    s.set("2026-06-05T09:30:00Z");
    assert_eq!(
        s.tick().await.len(),
        1,
        "missed Tue-Fri occurrences fire once, late (catch-up)"
    );
    s.set("2026-06-06T09:00:01Z");
    assert!(s.tick().await.is_empty(), "Saturday does not fire");
    s.set("2026-06-08T09:00:01Z");
    assert_eq!(s.tick().await.len(), 1, "next Monday fires");
}

#[tokio::test]
async fn per_pc_once_fires_once_per_pc_even_across_a_restart() {
    let s = setup().await;
    s.online(&["pc-1", "pc-2"]);
    s.schedule("id: setup\njob_id: job\nwhen:\n  per_pc: once\ntarget:\n  all: true\n")
        .await;
    let mut sub = commands(&s.transport).await;
    assert_eq!(s.tick().await.len(), 1);
    let mut subjects = vec![
        next_command(&mut sub).await.0,
        next_command(&mut sub).await.0,
    ];
    subjects.sort();
    assert_eq!(subjects, ["commands.pc.pc-1", "commands.pc.pc-2"]);
    assert!(s.tick().await.is_empty());

    // A restarted backend (same database) does not fire again…
    let restarted = Backend::open(
        s.transport.clone(),
        BackendSettings::new(s.dir.path().join("db")),
    )
    .await
    .unwrap();
    let again = scheduler_for(&restarted, &s.clock);
    assert!(again.tick_once().await.unwrap().is_empty());
    // …but a pc that appears later gets its one run.
    s.online(&["pc-3"]);
    assert_eq!(again.tick_once().await.unwrap().len(), 1);
    assert_eq!(next_command(&mut sub).await.0, "commands.pc.pc-3");
}

#[tokio::test]
async fn once_per_version_fires_again_after_a_version_bump() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule(
        "id: upgrade\njob_id: job\nwhen:\n  per_pc: once_per_version\ntarget:\n  all: true\n",
    )
    .await;
    assert_eq!(s.tick().await.len(), 1);
    assert!(s.tick().await.is_empty());
    s.complete("pc-1");
    s.backend
        .apply_job(
            "id: job\nversion: 2\nexecute:\n  shell: sh\n  script: echo v2\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(s.tick().await.len(), 1, "version 2 runs once more");
    assert!(s.tick().await.is_empty());
}

#[tokio::test]
async fn per_target_every_repeats_on_its_interval() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule(
        "id: hourly\njob_id: job\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\n",
    )
    .await;
    assert_eq!(s.tick().await.len(), 1);
    s.set("2026-06-01T09:30:00Z");
    assert!(s.tick().await.is_empty());
    s.set("2026-06-01T09:59:00Z");
    assert_eq!(s.tick().await.len(), 1);
}

#[tokio::test]
async fn freeze_stops_scheduled_fires_but_not_exec() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule(
        "id: hourly\njob_id: job\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\n",
    )
    .await;
    s.backend
        .db()
        .set_freeze(None, Some("change window"))
        .unwrap();
    assert!(s.tick().await.is_empty(), "frozen");
    let exec = s
        .backend
        .exec(
            "job",
            &Target {
                all: true,
                ..Target::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(exec.targeted, 1, "ad-hoc exec still runs");
    s.backend
        .db()
        .set_freeze(Some(utc("2026-06-01T09:30:00Z")), None)
        .unwrap();
    assert!(s.tick().await.is_empty(), "frozen until 09:30");
    s.set("2026-06-01T09:31:00Z");
    assert_eq!(s.tick().await.len(), 1, "the freeze expired");
}

#[tokio::test]
async fn deadline_retry_and_jitter_are_lowered_onto_the_command() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule(
        "id: careful\njob_id: job\nwhen:\n  per_target: once\ntarget:\n  pcs: [pc-1]\nstarting_deadline: 10m\njitter: 2m\non_failure:\n  retry:\n    max: 3\n    backoff: 30s\n",
    )
    .await;
    let mut sub = commands(&s.transport).await;
    assert_eq!(s.tick().await.len(), 1);
    let (subject, command) = next_command(&mut sub).await;
    assert_eq!(subject, "commands.pc.pc-1");
    assert_eq!(command.deadline_at, Some(utc("2026-06-01T09:09:00Z")));
    assert_eq!(command.jitter_secs, Some(120));
    let retry = command.retry.unwrap();
    assert_eq!((retry.max, retry.backoff_secs), (3, 30));
}

#[tokio::test]
async fn live_edits_disable_and_windows_apply() {
    let s = setup().await;
    s.online(&["pc-1"]);
    s.schedule("id: edited\njob_id: job\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\nenabled: false\n").await;
    assert!(s.tick().await.is_empty(), "disabled");
    s.schedule("id: edited\njob_id: job\nwhen:\n  per_target:\n    every: 1h\ntarget:\n  all: true\nconstraints:\n  window: \"10:00-12:00\"\n").await;
    assert!(s.tick().await.is_empty(), "outside its window");
    s.set("2026-06-01T10:15:00Z");
    assert_eq!(
        s.tick().await.len(),
        1,
        "enabled and inside the window: fires"
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_at_upload() {
    let s = setup().await;
    for (yaml, field) in [
        ("id: x\njob_id: job\nwhen:\n  sometimes: true\ntarget:\n  all: true\n", "when"),
        ("id: x\njob_id: job\nwhen:\n  calendar:\n    at: \"09:00\"\n    days: [funday]\ntarget:\n  all: true\n", "when"),
        ("id: x\njob_id: job\nwhen:\n  per_pc: once\ntarget:\n  all: true\nactive:\n  from: 2026-07-01\n  until: 2026-06-01\n", "active.until"),
    ] {
        let err = s.backend.apply_schedule(yaml).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(field) || field == "when" && text.contains("unknown field"), "{text}");
        assert!(text.contains("line"), "{text}");
    }
}

#[tokio::test]
async fn in_flight_pcs_are_not_fired_again_and_max_concurrent_caps_a_round() {
    let s = setup().await;
    s.online(&["pc-1", "pc-2", "pc-3"]);
    s.schedule("id: poll\njob_id: job\nwhen:\n  per_pc:\n    every: 10m\ntarget:\n  all: true\nconstraints:\n  max_concurrent: 2\n").await;
    let mut sub = commands(&s.transport).await;
    assert_eq!(s.tick().await.len(), 1);
    let first: Vec<String> = vec![
        next_command(&mut sub).await.0,
        next_command(&mut sub).await.0,
    ];
    assert_eq!(first.len(), 2, "capped at max_concurrent");
    // Ten minutes on, nobody has reported: both are still in flight, and the
    // cap leaves no room for the third pc either.
    s.set("2026-06-01T09:10:00Z");
    assert!(s.tick().await.is_empty());
    // One result comes in: that pc is free and due, and there is room again.
    let exec_id = s.backend.db().executions().unwrap()[0].exec_id.clone();
    let done_pc = first[0].trim_start_matches("commands.pc.").to_owned();
    let result: kanade::core::wire::ExecResult = serde_json::from_value(serde_json::json!({
        "result_id": format!("r-{done_pc}"), "request_id": "r", "exec_id": exec_id, "pc_id": done_pc,
        "exit_code": 0, "skipped": false, "stdout": "", "stderr": "",
        "started_at": "2026-06-01T09:00:00Z", "finished_at": "2026-06-01T09:00:01Z",
    }))
    .unwrap();
    s.backend.db().store_result(&result, false).unwrap();
    assert_eq!(s.tick().await.len(), 1);
    let (subject, _) = next_command(&mut sub).await;
    assert!(
        !first[1..].contains(&subject),
        "the still-running pc is not fired again: {subject}"
    );
}

/// pc-1 in `canary`, pc-2 in `rest`, both online, and a `wave` schedule
/// rolling `job` out to canary first, then to rest an hour later.
async fn two_wave_rollout(s: &Setup) {
    s.online(&["pc-1", "pc-2"]);
    let groups = s
        .transport
        .key_value(kanade::core::transport::KvConfig::new("agent_groups"))
        .await
        .unwrap();
    groups
        .put("pc-1", bytes::Bytes::from(r#"{"groups":["canary"]}"#))
        .await
        .unwrap();
    groups
        .put("pc-2", bytes::Bytes::from(r#"{"groups":["rest"]}"#))
        .await
        .unwrap();
    s.schedule(
        "id: wave\njob_id: job\nwhen:\n  per_target: once\ntarget:\n  groups: [canary, rest]\nrollout:\n  strategy: wave\n  waves:\n    - group: canary\n    - group: rest\n      delay: 1h\n",
    )
    .await;
}

#[tokio::test]
async fn rollout_waves_go_out_after_their_delays_once_even_across_a_restart() {
    let s = setup().await;
    two_wave_rollout(&s).await;
    let mut sub = commands(&s.transport).await;
    assert_eq!(s.tick().await.len(), 1);
    assert_eq!(next_command(&mut sub).await.0, "commands.group.canary");
    s.set("2026-06-01T09:30:00Z");
    assert!(
        s.tick().await.is_empty(),
        "the second wave waits for its delay"
    );
    // The backend restarts before the second wave is due.
    let restarted = Backend::open(
        s.transport.clone(),
        BackendSettings::new(s.dir.path().join("db")),
    )
    .await
    .unwrap();
    let again = scheduler_for(&restarted, &s.clock);
    s.set("2026-06-01T10:00:00Z");
    assert_eq!(
        again.tick_once().await.unwrap().len(),
        1,
        "the planned wave survives the restart"
    );
    assert_eq!(next_command(&mut sub).await.0, "commands.group.rest");
    s.set("2026-06-01T12:00:00Z");
    assert!(
        again.tick_once().await.unwrap().is_empty(),
        "no wave twice, no new fire of a once schedule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_received_after_its_starting_deadline_is_skipped_with_125() {
    let s = setup().await;
    let state = tempfile::tempdir().unwrap();
    let mut settings = kanade::agent::AgentSettings::new(
        kanade::core::names::SubjectToken::pc("late-pc").unwrap(),
        state.path(),
    );
    settings.inventory = false;
    let agent = kanade::agent::Agent::builder(settings, s.transport.clone())
        .build()
        .unwrap();
    let running = tokio::spawn(agent.run(std::future::pending()));
    let mut results = s.transport.messages().subscribe("results.*").await.unwrap();
    // The agent lives on the wall clock; the scheduler's clock says June 2026,
    // so the command's deadline has long passed when the agent gets it.
    s.online(&["late-pc"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.schedule("id: late\njob_id: job\nwhen:\n  per_target: once\ntarget:\n  pcs: [late-pc]\nstarting_deadline: 10m\n").await;
    assert_eq!(s.tick().await.len(), 1);
    let message = tokio::time::timeout(Duration::from_secs(10), results.next())
        .await
        .unwrap()
        .unwrap();
    let result: kanade::core::wire::ExecResult = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (result.pc_id.as_str(), result.exit_code, result.skipped),
        ("late-pc", 125, true)
    );
    running.abort();
}

/// Case 10 of the reliability issue: a freeze or a disabled schedule also
/// holds rollout waves that come due; they go out when lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_10_waves_wait_out_a_freeze_and_a_disable() {
    for hold in ["freeze", "disable"] {
        let s = setup().await;
        two_wave_rollout(&s).await;
        let mut sub = commands(&s.transport).await;
        assert_eq!(s.tick().await.len(), 1, "{hold}: the first wave");
        assert_eq!(next_command(&mut sub).await.0, "commands.group.canary");
        match hold {
            "freeze" => s.backend.db().set_freeze(None, Some("incident")).unwrap(),
            _ => {
                s.backend.set_schedule_enabled("wave", false).await.unwrap();
            }
        }
        s.set("2026-06-01T10:30:00Z");
        assert!(s.tick().await.is_empty(), "{hold}: the due wave is held");
        match hold {
            "freeze" => s.backend.db().clear_freeze().unwrap(),
            _ => {
                s.backend.set_schedule_enabled("wave", true).await.unwrap();
            }
        }
        s.set("2026-06-01T10:31:00Z");
        assert_eq!(s.tick().await.len(), 1, "{hold}: lifted, the wave goes out");
        assert_eq!(next_command(&mut sub).await.0, "commands.group.rest");
        s.set("2026-06-01T12:00:00Z");
        assert!(s.tick().await.is_empty(), "{hold}: once");
    }
}
