//! The fleet benchmark, with real processes: a `nats-server` (JetStream,
//! `sync_interval: always`), the `kanade-backend` binary and N
//! `kanade-agent` processes (release builds), an `echo hi` job, and the
//! `kanade` CLI timed from `exec` to the printed table — `--pcs` one agent
//! and `--all` — over R rounds (median, p90), with the agents' mean RSS and
//! the backend's. Prints figures; asserts nothing.
//!
//! `--clients N` measures the backend's ingest path at fleet scale instead:
//! N lightweight NATS clients (one connection each) announce themselves
//! with a heartbeat and answer `commands.all` with a result into RESULTS,
//! acknowledged by the stream, as agents do; the time from exec until all N
//! results are stored in SQLite, and results per second.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo build --profile agent -p kanade-agent   # optional: the agent as deployed
//! cargo run --release --example fleet_bench -- --agents 10 --rounds 7
//! cargo run --release --example fleet_bench -- --clients 10000
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use kanade::nats::test_server::NatsServer;

/// Time kanade with real processes.
#[derive(Parser)]
struct Args {
    /// Agent processes.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Timed rounds of each exec.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Instead of agent processes: this many lightweight NATS clients, and
    /// time one exec until all their results are stored.
    #[arg(long)]
    clients: Option<usize>,
}

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Kills the process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary: the size-optimised `agent` profile's if it was built
/// (`cargo build --profile agent -p kanade-agent`), else the release one.
fn agent_binary(release: &Path) -> PathBuf {
    let agent = release
        .parent()
        .map(|target| target.join("agent").join("kanade-agent"));
    match agent {
        Some(path) if path.exists() => path,
        _ => release.join("kanade-agent"),
    }
}

/// Where the release binaries are (next to this example's directory).
fn binaries() -> BenchResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?
        .to_path_buf();
    for name in ["kanade-backend", "kanade-agent", "kanade"] {
        if !dir.join(name).exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace --bins` first",
                dir.join(name).display()
            )
            .into());
        }
    }
    Ok(dir)
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident set size of a process, in KiB (Linux `/proc`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) struct Cli {
    binary: PathBuf,
    pub(crate) server: String,
    pub(crate) token: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> BenchResult<(bool, String)> {
        let output = Command::new(&self.binary)
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .env("KANADE_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", std::env::temp_dir().join("kanade-bench"))
            .stderr(Stdio::null())
            .output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    }
}

/// The backend binary on `nats_url`, its CLI, and its process.
fn start_backend(bin: &Path, nats_url: &str, dir: &Path) -> BenchResult<(Cli, Reaped)> {
    let db = dir.join("backend.db");
    let created = Command::new(bin.join("kanade-backend"))
        .args([
            "token", "create", "--name", "bench", "--role", "admin", "--db",
        ])
        .arg(&db)
        .output()?;
    if !created.status.success() {
        return Err(format!("token create: {created:?}").into());
    }
    let listen = format!("127.0.0.1:{}", free_port()?);
    let backend = Reaped(
        Command::new(bin.join("kanade-backend"))
            .args(["--transport", nats_url, "--listen", &listen])
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let cli = Cli {
        binary: bin.join("kanade"),
        server: format!("http://{listen}"),
        token: String::from_utf8(created.stdout)?.trim().to_owned(),
    };
    wait_until("the backend API", Duration::from_secs(30), || {
        Ok(cli.run(&["agents"])?.0)
    })?;
    let job = dir.join("hello.yaml");
    std::fs::write(
        &job,
        "id: hello\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
    )?;
    let (ok, out) = cli.run(&["job", "apply", "-f", &job.to_string_lossy()])?;
    if !ok {
        return Err(format!("job apply: {out}").into());
    }
    Ok((cli, backend))
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> BenchResult<bool>,
) -> BenchResult {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what} not ready within {limit:?}").into())
}

fn agents_online(cli: &Cli) -> BenchResult<usize> {
    let (_, out) = cli.run(&["--json", "agents"])?;
    let agents: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    Ok(agents
        .as_array()
        .map_or(0, |a| a.iter().filter(|a| a["online"] == true).count()))
}

/// Median and p90 of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9))
}

fn processes(args: &Args) -> BenchResult {
    let bin = binaries()?;
    let nats = NatsServer::try_start()?;
    let dir = tempfile::tempdir()?;
    let (cli, backend) = start_backend(&bin, &nats.url(), dir.path())?;
    let agent = agent_binary(&bin);
    let mut agents = Vec::new();
    for n in 0..args.agents {
        let pc = format!("bench-{n:04}");
        agents.push(Reaped(
            Command::new(&agent)
                .args(["--transport", &nats.url(), "--pc-id", &pc])
                .arg("--state-dir")
                .arg(dir.path().join(&pc))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ));
    }
    wait_until("every agent online", Duration::from_secs(60), || {
        Ok(agents_online(&cli)? == args.agents)
    })?;
    // Let start-up work (inventory, first heartbeats) settle.
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss: Vec<u64> = agents.iter().filter_map(|a| rss_kib(a.0.id())).collect();
    println!(
        "{} kanade-agent processes ({}) on {}, {} rounds each (loopback)",
        args.agents,
        agent.display(),
        nats.url(),
        args.rounds
    );
    for (label, exec) in [
        (
            "exec --pcs one",
            vec!["exec", "hello", "--pcs", "bench-0000"],
        ),
        ("exec --all", vec!["exec", "hello", "--all"]),
    ] {
        // One warm-up round.
        cli.run(&exec)?;
        let mut samples = Vec::new();
        for _ in 0..args.rounds {
            let started = Instant::now();
            let (ok, out) = cli.run(&exec)?;
            samples.push(started.elapsed());
            if !ok {
                return Err(format!("{label} failed: {out}").into());
            }
        }
        let (median, p90) = summary(&mut samples);
        println!("{label:<16} command to table: median {median:.1?}, p90 {p90:.1?}");
    }
    let busy_rss: Vec<u64> = agents.iter().filter_map(|a| rss_kib(a.0.id())).collect();
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
    println!(
        "agent RSS: idle {:.1} MiB (mean); bench-0000 after {} commands {:.1} MiB, the others after {} {:.1} MiB (mean)",
        mean(&idle_rss),
        2 * (args.rounds + 1),
        busy_rss.first().copied().unwrap_or(0) as f64 / 1024.0,
        args.rounds + 1,
        mean(busy_rss.get(1..).unwrap_or_default())
    );
    println!(
        "backend RSS: {:.1} MiB",
        rss_kib(backend.0.id()).unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}

fn main() -> BenchResult {
    let args = Args::parse();
    match args.clients {
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(clients::run(n)),
        None => processes(&args),
    }
}

mod clients;
