//! `fleet_bench --clients N`: the backend's ingest path at fleet scale.
//! N lightweight NATS clients, one connection each (as `nats_fanout`
//! does), send a heartbeat, then answer `commands.all` with a result
//! published into RESULTS and acknowledged by the stream — what an agent
//! does, without running anything. One exec through the CLI; the time
//! until the backend has stored all N results in SQLite.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kanade::core::names::{subjects, SubjectToken};
use kanade::core::transport::MESSAGE_ID_HEADER;
use kanade::core::wire::{Command, ExecResult};
use kanade::nats::test_server::NatsServer;

use super::{agents_online, binaries, start_backend, wait_until, BenchResult};

/// Lets this process (and the nats-server it starts) hold `n` sockets.
fn raise_open_files(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (n + 1024).min(hard);
        if want > soft {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// One client: heartbeat, then a result for every command.
async fn client(url: String, pc: String) -> BenchResult<tokio::task::JoinHandle<()>> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(30))
        .connect(url.as_str())
        .await?;
    let mut commands = client.subscribe(subjects::COMMANDS_ALL).await?;
    let token = SubjectToken::pc(pc.clone())?;
    let heartbeat = serde_json::to_vec(&serde_json::json!({
        "pc_id": pc,
        "at": chrono::Utc::now(),
        "agent_version": "bench",
    }))?;
    client
        .publish(subjects::heartbeat(&token), heartbeat.into())
        .await?;
    client.flush().await?;
    let js = async_nats::jetstream::new(client);
    Ok(tokio::spawn(async move {
        while let Some(message) = commands.next().await {
            let Ok(command) = serde_json::from_slice::<Command>(&message.payload) else {
                continue;
            };
            let now = chrono::Utc::now();
            let result = ExecResult {
                result_id: format!("{}-{pc}", command.request_id),
                request_id: command.request_id.clone(),
                exec_id: command.exec_id.clone(),
                pc_id: pc.clone(),
                exit_code: 0,
                skipped: false,
                stdout: "hi\n".into(),
                stderr: String::new(),
                started_at: now,
                finished_at: now,
                stdout_object: None,
                stderr_object: None,
                manifest_id: Some(format!("{}@{}", command.id, command.version)),
                attempts: 1,
            };
            let Ok(token) = SubjectToken::new(
                kanade::core::names::TokenKind::RequestId,
                command.request_id.clone(),
            ) else {
                continue;
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MESSAGE_ID_HEADER, result.result_id.as_str());
            let Ok(body) = serde_json::to_vec(&result) else {
                continue;
            };
            // Until the stream acknowledges it, as an agent's outbox does.
            for _ in 0..30 {
                let published = js
                    .publish_with_headers(
                        subjects::results(&token),
                        headers.clone(),
                        body.clone().into(),
                    )
                    .await;
                if let Ok(ack) = published {
                    if ack.await.is_ok() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
}

/// Execs `hello` on all, then follows the execution through the API's
/// long-poll until `n` results are stored; the time from the exec.
fn until_stored(cli: &super::Cli, n: usize) -> BenchResult<Duration> {
    let started = Instant::now();
    let (ok, out) = cli.run(&["--json", "exec", "hello", "--all", "--no-wait"])?;
    if !ok {
        return Err(format!("exec: {out}").into());
    }
    let row: serde_json::Value = serde_json::from_str(&out)?;
    let id = row["exec_id"].as_str().ok_or("no exec_id")?.to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let mut after = String::from("-");
    loop {
        let mut response = agent
            .get(&format!(
                "{}/api/executions/{id}?after={after}&wait=30s",
                cli.server
            ))
            .header("Authorization", &format!("Bearer {}", cli.token))
            .call()?;
        let row: kanade::backend::db::ExecutionRow = response.body_mut().read_json()?;
        if row.succeeded + row.failed + row.skipped >= n as i64 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err("not every result within 5 minutes".into());
        }
        after = row.fingerprint();
    }
}

/// Runs the ingest benchmark with `n` clients.
pub async fn run(n: usize) -> BenchResult {
    raise_open_files(n as u64 * 2);
    let bin = binaries()?;
    let nats = NatsServer::try_start()?;
    let dir = tempfile::tempdir()?;
    let (bin2, url, path) = (bin.clone(), nats.url(), dir.path().to_path_buf());
    let (cli, _backend) =
        tokio::task::spawn_blocking(move || start_backend(&bin2, &url, &path)).await??;
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter((0..n).map(|i| {
        let url = nats.url();
        client(url, format!("client-{i:05}"))
    }))
    .buffer_unordered(200);
    while let Some(task) = pending.next().await {
        tasks.push(task?);
    }
    println!(
        "{n} clients connected in {:.1?}; waiting for the backend to see them",
        connecting.elapsed()
    );
    let cli = std::sync::Arc::new(cli);
    let seen = cli.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("every client seen online", Duration::from_secs(120), || {
            Ok(agents_online(&seen)? >= n)
        })
    })
    .await??;
    // Once to the point where every result is stored (the backend's view,
    // followed through the long-poll), once more through the CLI's table.
    let exec_cli = cli.clone();
    let stored = tokio::task::spawn_blocking(move || until_stored(&exec_cli, n)).await??;
    println!(
        "exec --all to {n} clients until every result is stored: {stored:.2?} ({:.0} results/s)",
        n as f64 / stored.as_secs_f64()
    );
    let exec_cli = cli.clone();
    let started = Instant::now();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        exec_cli.run(&["--json", "exec", "hello", "--all", "--wait", "10m"])
    })
    .await??;
    let wall = started.elapsed();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    println!(
        "the same through `kanade --json exec` (all {} results printed): {wall:.2?}, exit {}",
        rows.len(),
        if ok { "ok" } else { "not ok" }
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}
