//! Quickstart on the embedded default (the in-memory transport): an agent
//! and a tiny "backend" in one process. Sends a few commands and prints the
//! results — a normal run, a retried failure, a start deadline that already
//! passed, and a revoked job.
//!
//! ```text
//! cargo run -p kanade-agent --example agent_quickstart
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_agent::{Agent, AgentSettings};
use kanade_core::names::{StreamSpec, SubjectToken};
use kanade_core::transport::memory::{MemorySettings, MemoryTransport};
use kanade_core::transport::{Headers, KvConfig, StreamConfig, Transport};
use kanade_core::wire::{Command, ExecResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn command(
    request: &str,
    job: &str,
    script: &str,
    extra: serde_json::Value,
) -> Result<Command, Error> {
    let mut value = serde_json::json!({
        "id": job, "version": "1.0.0", "request_id": request, "exec_id": format!("quickstart-{request}"),
        "shell": "sh", "script": script, "timeout_secs": 30,
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    Ok(serde_json::from_value(value)?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::with_settings(MemorySettings {
        start_time: chrono::Utc::now(),
        ..MemorySettings::default()
    }));
    for spec in [StreamSpec::EXEC, StreamSpec::RESULTS] {
        transport
            .messages()
            .create_stream(StreamConfig::from_spec(&spec))
            .await?;
    }
    let revoked = transport.key_value(KvConfig::new("script_status")).await?;
    revoked
        .put("old-job", Bytes::from_static(b"REVOKED"))
        .await?;

    let state = std::env::temp_dir().join(format!("kanade-quickstart-{}", std::process::id()));
    let settings = AgentSettings::new(SubjectToken::pc("quickstart-pc")?, &state);
    let agent = Agent::builder(settings, transport.clone()).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let log = transport.messages();
    let mut results = log.subscribe("results.*").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let commands = [
        command(
            "q1",
            "hello",
            "echo \"hello from $(uname -s)\"",
            serde_json::json!({}),
        )?,
        command(
            "q2",
            "flaky",
            "echo trying >&2; exit 3",
            serde_json::json!({"retry": {"max": 2, "backoff_secs": 1}}),
        )?,
        command(
            "q3",
            "late",
            "echo never",
            serde_json::json!({"deadline_at": "2020-01-01T00:00:00Z"}),
        )?,
        command("q4", "old-job", "echo never", serde_json::json!({}))?,
    ];
    for command in &commands {
        log.publish(
            "commands.all",
            Headers::new(),
            Bytes::from(serde_json::to_vec(command)?),
        )
        .await?;
    }
    println!(
        "{:<8} {:<8} {:>5} {:>8} {:>8}  output",
        "request", "job", "exit", "skipped", "attempts"
    );
    for _ in &commands {
        let message = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await?
            .ok_or("results ended")?;
        let result: ExecResult = serde_json::from_slice(&message.payload)?;
        let output = if result.stdout.is_empty() {
            &result.stderr
        } else {
            &result.stdout
        };
        println!(
            "{:<8} {:<8} {:>5} {:>8} {:>8}  {}",
            result.request_id,
            result.manifest_id.unwrap_or_default(),
            result.exit_code,
            result.skipped,
            result.attempts,
            output.trim().replace('\n', " | ")
        );
    }
    let _ = stop.send(());
    running.await??;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
