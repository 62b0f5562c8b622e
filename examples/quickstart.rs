//! Quickstart: a backend and three agents in one process on the in-memory
//! transport (no server needed). Applies a sample job, runs it on every
//! agent, and prints the results table from the backend's SQLite store.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::Arc;
use std::time::Duration;

use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::SubjectToken;
use kanade::core::transport::memory::{MemorySettings, MemoryTransport};
use kanade::core::transport::Transport;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SAMPLE_JOB: &str = r#"id: hello-fleet
version: 1.0.0
description: say hello from every endpoint
execute:
  shell: sh
  script: |
    echo "hello from $(hostname) on $(uname -s)"
  timeout: 30s
tags: [quickstart]
"#;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::with_settings(MemorySettings {
        start_time: chrono::Utc::now(),
        ..MemorySettings::default()
    }));
    let scratch = std::env::temp_dir().join(format!("kanade-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    let backend = Backend::open(
        transport.clone(),
        BackendSettings::new(scratch.join("backend.db")),
    )
    .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let projectors = tokio::spawn(backend.clone().run(wait_stop(stopped.clone())));
    let mut agents = Vec::new();
    for n in 1..=3 {
        let pc = format!("pc-{n:03}");
        let settings = AgentSettings::new(SubjectToken::pc(pc.clone())?, scratch.join(&pc));
        let agent = Agent::builder(settings, transport.clone()).build()?;
        agents.push(tokio::spawn(agent.run(wait_stop(stopped.clone()))));
    }
    // Let the agents' first heartbeats reach the backend.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let job = backend.apply_job(SAMPLE_JOB, &Default::default()).await?;
    println!("applied job {} {}", job.id, job.version);
    let execution = backend
        .exec(
            &job.id,
            &Target {
                all: true,
                ..Target::default()
            },
        )
        .await?;
    println!(
        "execution {} targets {} agents",
        execution.exec_id, execution.targeted
    );
    let db = backend.db().clone();
    let finished = loop {
        let id = execution.exec_id.clone();
        let db = db.clone();
        let row = tokio::task::spawn_blocking(move || db.execution(&id))
            .await??
            .ok_or("execution vanished")?;
        if row.status == "completed" {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = execution.exec_id.clone();
    let results = tokio::task::spawn_blocking(move || db.results(&id)).await??;
    println!(
        "{}: {} succeeded, {} failed, {} skipped of {}",
        finished.status, finished.succeeded, finished.failed, finished.skipped, finished.targeted
    );
    println!("{:<8} {:>5} {:>8}  stdout", "pc", "exit", "skipped");
    for r in &results {
        println!(
            "{:<8} {:>5} {:>8}  {}",
            r.pc_id,
            r.exit_code,
            r.skipped,
            r.stdout.trim()
        );
    }

    let _ = stop.send(true);
    projectors.await??;
    for agent in agents {
        agent.await??;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
