//! An agent inside your own tokio program, with a script runner of your own.
//!
//! The agent runs on the in-memory transport by default; set `NATS_URL`
//! (`nats://127.0.0.1:4222`, comma-separated for a cluster) to join a real
//! fleet instead. The runner here is the user's: it does not spawn
//! processes but answers `sh` scripts made of `echo` lines itself and
//! refuses everything else — the seam where an embedder plugs in a sandbox,
//! a container runtime or a test double. The program then plays a tiny
//! backend: it publishes one command to its own agent and prints the result.
//!
//! ```text
//! cargo run --example embed_agent
//! NATS_URL=nats://127.0.0.1:4222 cargo run --example embed_agent
//! ```
//!
//! Sending a command and waiting for its result needs no sleep and no
//! polling: subscribe to `results.*` first, publish the command on the
//! agent's own subject (`commands.pc.<pc>`: the EXEC stream keeps it, so an
//! agent still starting replays it), then await the subscription for the
//! result whose `request_id` is the command's.
//!
//! In a project of your own this example needs:
//!
//! ```toml
//! [dependencies]
//! kanade = { version = "0.1", features = ["agent"] }   # + "nats" for NATS_URL
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }
//! async-trait = "0.1"
//! bytes = "1"
//! chrono = "0.4"
//! serde_json = "1"
//! tempfile = "3"
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kanade::agent::{Agent, AgentSettings, KillSignal, RunEnd, RunOutput, RunSpec, ScriptRunner};
use kanade::core::names::{subjects, StreamSpec, SubjectToken};
use kanade::core::wire::{Command, ExecResult, Shell};
use kanade::transport::{Headers, StreamConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs `sh` scripts whose every line is `echo <text>`; refuses the rest.
struct EchoOnlyRunner;

#[async_trait]
impl ScriptRunner for EchoOnlyRunner {
    fn supports(&self, shell: Shell) -> bool {
        shell == Shell::Sh
    }

    async fn run(&self, spec: RunSpec, _kill: KillSignal) -> RunOutput {
        let started_at = chrono::Utc::now();
        let mut stdout = Vec::new();
        let mut end = RunEnd::Exited(0);
        let mut stderr = Vec::new();
        for line in spec.script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.strip_prefix("echo ") {
                Some(text) => {
                    stdout.extend_from_slice(text.trim_matches('"').as_bytes());
                    stdout.push(b'\n');
                }
                None => {
                    stderr.extend_from_slice(format!("refused: {line:?}\n").as_bytes());
                    end = RunEnd::Exited(2);
                    break;
                }
            }
        }
        RunOutput {
            end,
            stdout,
            stderr,
            started_at,
            finished_at: chrono::Utc::now(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "memory".into());
    let transport = kanade::transport::open(&url).await?;
    // The backend normally provisions the streams; this program is its own backend.
    for spec in [StreamSpec::EXEC, StreamSpec::RESULTS] {
        transport
            .messages()
            .create_stream(StreamConfig::from_spec(&spec))
            .await?;
    }

    let state_dir = tempfile::tempdir()?;
    let pc = SubjectToken::pc("embedded-pc")?;
    let settings = AgentSettings::new(pc.clone(), state_dir.path());
    let agent = Agent::builder(settings, transport.clone())
        .runner(Arc::new(EchoOnlyRunner))
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    println!("agent {pc} running on {url}");

    let log = transport.messages();
    // Subscribe before publishing: the result cannot slip past.
    let mut results = log.subscribe("results.*").await?;
    let command: Command = serde_json::from_value(serde_json::json!({
        "id": "greet", "version": "1.0.0", "request_id": format!("embed-{}", std::process::id()),
        "exec_id": "embed-1", "shell": "sh", "timeout_secs": 10,
        "script": "echo hello from an embedded agent\necho run by EchoOnlyRunner",
    }))?;
    log.publish(
        &subjects::commands_pc(&pc),
        Headers::new(),
        Bytes::from(serde_json::to_vec(&command)?),
    )
    .await?;
    // The first result answering this request (others may pass by on a
    // shared bus).
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = results.next().await {
            let result: ExecResult = serde_json::from_slice(&message.payload)?;
            if result.request_id == command.request_id {
                return Ok(result);
            }
        }
        Err::<ExecResult, Error>("the results subscription ended".into())
    })
    .await??;
    println!(
        "result of {}: exit {} after {} attempt(s)\n{}",
        result.request_id,
        result.exit_code,
        result.attempts,
        result.stdout.trim_end()
    );

    let _ = stop.send(());
    running.await??;
    Ok(())
}
