//! Shared harness for the agent tests: a scripted fake runner, an agent over
//! the memory transport on a tokio clock, and result helpers.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use kanade_agent::{
    Agent, AgentSettings, KillSignal, RunEnd, RunOutput, RunSpec, ScriptRunner, TokioClock,
};
use kanade_core::names::SubjectToken;
use kanade_core::transport::{Headers, Subscription, Transport};
use kanade_core::wire::{Command, EventStarted, ExecResult, Shell};

/// Runs "scripts" written as `key=value;…`: `sleep=<secs>`, `exit=<code>`,
/// `stdout=<bytes>`, `fail_first=<n>` (exit 1 for the first n runs), `echo`
/// (stdout = the script itself).
#[derive(Default)]
pub struct FakeRunner {
    pub runs: AtomicU32,
}

use kanade_agent::scripted::script_field as field;

#[async_trait]
impl ScriptRunner for FakeRunner {
    fn supports(&self, shell: Shell) -> bool {
        !matches!(shell, Shell::Cmd | Shell::Powershell)
    }

    async fn run(&self, spec: RunSpec, mut kill: KillSignal) -> RunOutput {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let started_at = Utc::now();
        let sleep = Duration::from_secs(field(&spec.script, "sleep").unwrap_or(0));
        let end = tokio::select! {
            _ = tokio::time::sleep(sleep) => None,
            _ = tokio::time::sleep(spec.timeout) => Some(RunEnd::TimedOut),
            _ = kanade_agent::kill_requested(&mut kill) => Some(RunEnd::Killed),
        };
        let end = end.unwrap_or_else(|| {
            let fail_first = field(&spec.script, "fail_first").unwrap_or(0);
            if u64::from(run) <= fail_first {
                RunEnd::Exited(1)
            } else {
                RunEnd::Exited(field(&spec.script, "exit").unwrap_or(0) as i32)
            }
        });
        let mut stdout = vec![b'o'; field(&spec.script, "stdout").unwrap_or(0) as usize];
        if spec.script.contains("echo") {
            stdout = spec.script.clone().into_bytes();
        }
        let stderr = match end {
            RunEnd::TimedOut => b"kanade: timed out".to_vec(),
            RunEnd::Killed => b"kanade: killed on request".to_vec(),
            _ => Vec::new(),
        };
        RunOutput {
            end,
            stdout,
            stderr,
            started_at,
            finished_at: Utc::now(),
        }
    }
}

pub struct Harness {
    pub transport: Arc<dyn Transport>,
    pub state: tempfile::TempDir,
    pub runner: Arc<FakeRunner>,
    pub agent: Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn settings(state: &std::path::Path) -> AgentSettings {
    let mut settings = AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), state);
    settings.jitter_seed = Some(7);
    // Inventory collection runs on a blocking thread, which lets paused
    // time jump; the test that covers it turns it on.
    settings.inventory = false;
    settings
}

pub fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at(
        Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap(),
    ))
}

impl Harness {
    pub async fn start(transport: Arc<dyn Transport>) -> Self {
        Self::start_in(transport, tempfile::tempdir().unwrap(), |b| b).await
    }

    pub async fn start_in(
        transport: Arc<dyn Transport>,
        state: tempfile::TempDir,
        customise: impl FnOnce(kanade_agent::AgentBuilder) -> kanade_agent::AgentBuilder,
    ) -> Self {
        Self::start_full(transport, state, |_| {}, customise).await
    }

    /// [`Harness::start_in`] with the settings adjusted first.
    pub async fn start_with(
        transport: Arc<dyn Transport>,
        state: tempfile::TempDir,
        adjust: impl FnOnce(&mut AgentSettings),
    ) -> Self {
        Self::start_full(transport, state, adjust, |b| b).await
    }

    /// [`Harness::start_in`] with the settings adjusted first, and the
    /// builder customised.
    pub async fn start_full(
        transport: Arc<dyn Transport>,
        state: tempfile::TempDir,
        adjust: impl FnOnce(&mut AgentSettings),
        customise: impl FnOnce(kanade_agent::AgentBuilder) -> kanade_agent::AgentBuilder,
    ) -> Self {
        let runner = Arc::new(FakeRunner::default());
        let mut settings = settings(state.path());
        adjust(&mut settings);
        let builder = Agent::builder(settings, transport.clone())
            .runner(runner.clone())
            .clock(clock());
        let agent = customise(builder).build().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = agent.clone();
        let task = tokio::spawn(async move {
            running
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        // Let the agent subscribe before the test publishes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Self {
            transport,
            state,
            runner,
            agent,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Simulates a crash: all work is abandoned unreported, then the agent
    /// stops. Returns its state dir.
    pub async fn crash(self) -> tempfile::TempDir {
        self.agent.halt();
        self.stop().await
    }

    /// Stops the agent gracefully (running work is killed and reported) and
    /// returns its state dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.state, dir)
    }

    pub async fn send(&self, subject: &str, command: &Command) {
        publish_command(&self.transport, subject, command).await;
    }
}

/// A fresh in-memory transport.
pub fn memory() -> Arc<dyn Transport> {
    Arc::new(kanade_core::transport::memory::MemoryTransport::new())
}

/// Publishes `command` as JSON on `subject`.
pub async fn publish_command(transport: &Arc<dyn Transport>, subject: &str, command: &Command) {
    use kanade_core::transport::ext::MessageLogExt;
    transport
        .messages()
        .publish_json(subject, Headers::new(), command)
        .await
        .unwrap();
}

pub fn command(request: &str, script: &str) -> Command {
    serde_json::from_value(serde_json::json!({
        "id": "job", "version": "1", "request_id": request, "exec_id": format!("exec-{request}"),
        "shell": "sh", "script": script, "timeout_secs": 600,
    }))
    .unwrap()
}

pub async fn results(transport: &Arc<dyn Transport>) -> Subscription {
    transport.messages().subscribe("results.*").await.unwrap()
}

pub async fn next_result(sub: &mut Subscription) -> ExecResult {
    let message = tokio::time::timeout(Duration::from_secs(3600), sub.next())
        .await
        .expect("a result within an hour of tokio time")
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

pub async fn next_started(sub: &mut Subscription) -> EventStarted {
    let message = tokio::time::timeout(Duration::from_secs(3600), sub.next())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

/// Asserts nothing more arrives within `wait` of tokio time.
pub async fn assert_quiet(sub: &mut Subscription, wait: Duration) {
    if let Ok(Some(message)) = tokio::time::timeout(wait, sub.next()).await {
        panic!(
            "unexpected message on {}: {}",
            message.subject,
            String::from_utf8_lossy(&message.payload)
        );
    }
}
