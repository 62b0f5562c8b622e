//! Running scripts: the [`ScriptRunner`] seam and the real
//! [`ProcessRunner`], which spawns each script in its own process group,
//! captures output with a cap, and on timeout or kill sends SIGTERM to the
//! group, waits a grace period, then SIGKILL.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kanade_core::policy::overflow::CAPTURE_CAP_BYTES;
use kanade_core::wire::{RunAs, Shell};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Interpreter.
    pub shell: Shell,
    /// Script body.
    pub script: String,
    /// Working directory (`None`: the agent's).
    pub cwd: Option<String>,
    /// Limit of this attempt.
    pub timeout: Duration,
    /// Identity to run under.
    pub run_as: RunAs,
    /// The command's `request_id` (for runners that log or count runs).
    pub request_id: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Where to record the spawned process group and its start time while
    /// it runs, so a restarted agent can terminate what a crash left behind
    /// (`None`: not recorded).
    pub process_record: Option<PathBuf>,
    /// Variables added to the script's environment (the agent sets
    /// `KANADE_PC_ID`, `KANADE_JOB_ID`, `KANADE_JOB_VERSION`,
    /// `KANADE_EXEC_ID` and `KANADE_REQUEST_ID`, as Rundeck's `RD_NODE_*`).
    pub env: Vec<(String, String)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Exited with this code.
    Exited(i32),
    /// Hit its timeout and was terminated.
    TimedOut,
    /// Killed on request.
    Killed,
    /// Could not be started (the shell is missing, cwd does not exist, …).
    SpawnFailed,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// How it ended.
    pub end: RunEnd,
    /// Captured stdout (capped, head and tail kept).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped), plus a note for timeouts, kills and spawn failures.
    pub stderr: Vec<u8>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// A kill switch: set to `true` to kill the run.
pub type KillSignal = watch::Receiver<bool>;

/// Returns once `kill` is set; never if its sender goes away unset.
/// For runners (and retry waits) to race against their work.
pub async fn kill_requested(kill: &mut KillSignal) {
    while !*kill.borrow_and_update() {
        if kill.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Awaits `work` unless a kill comes first (the kill is polled first, so
/// one already requested wins): `None` when killed.
pub async fn unless_killed<T>(kill: &mut KillSignal, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = kill_requested(kill) => None,
        done = work => Some(done),
    }
}

/// Runs scripts. The real implementation spawns processes; simulations and
/// tests provide their own.
#[async_trait]
pub trait ScriptRunner: Send + Sync {
    /// Whether this host can run `shell`.
    fn supports(&self, shell: Shell) -> bool;
    /// Runs one attempt; resolves when it has ended.
    async fn run(&self, spec: RunSpec, kill: KillSignal) -> RunOutput;
}

/// Spawns real processes.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    /// Wait between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Per-stream capture cap.
    pub capture_cap: usize,
}

impl Default for ProcessRunner {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            capture_cap: CAPTURE_CAP_BYTES,
        }
    }
}

/// The program and arguments that run `script` with `shell`.
pub fn command_line(shell: Shell, script: &str) -> (&'static str, Vec<String>) {
    let s = script.to_owned();
    match shell {
        Shell::Sh => ("sh", vec!["-c".into(), s]),
        Shell::Bash => ("bash", vec!["-c".into(), s]),
        Shell::Pwsh => (
            "pwsh",
            vec![
                "-NoProfile".into(),
                "-NonInteractive".into(),
                "-Command".into(),
                s,
            ],
        ),
        Shell::Powershell => (
            "powershell",
            vec![
                "-NoProfile".into(),
                "-NonInteractive".into(),
                "-Command".into(),
                s,
            ],
        ),
        Shell::Cmd => ("cmd", vec!["/C".into(), s]),
    }
}

/// Finds `program` on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Keeps the first and last `cap / 2` bytes of a stream, counting the rest.
#[derive(Debug)]
pub struct CappedCapture {
    cap: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: usize,
}

impl CappedCapture {
    /// A capture keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            total: 0,
        }
    }

    /// Adds bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        let half = self.cap / 2;
        let mut rest = bytes;
        if self.head.len() < half {
            let take = (half - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.tail.extend(rest);
        while self.tail.len() > self.cap - half {
            self.tail.pop_front();
        }
    }

    /// The captured bytes, with a marker if anything was dropped.
    pub fn finish(self) -> Vec<u8> {
        let kept = self.head.len() + self.tail.len();
        let mut out = self.head;
        if self.total > kept {
            out.extend_from_slice(
                format!(
                    "\n[kanade: output truncated: {} bytes in all, {kept} kept]\n",
                    self.total
                )
                .as_bytes(),
            );
        }
        out.extend(self.tail);
        out
    }
}

/// One stream's capture, shared between the task reading the pipe and the
/// runner, which takes what was read so far if the pipe never closes.
type SharedCapture = Arc<Mutex<CappedCapture>>;

/// Reads `stream` into `capture` until it closes (or fails).
async fn capture(mut stream: impl AsyncRead + Unpin, capture: SharedCapture) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            // No await while the lock is held: an abort leaves it whole.
            Ok(n) => capture
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buffer[..n]),
        }
    }
}

/// What a capture holds now, with its truncation marker.
fn take(capture: &SharedCapture) -> Vec<u8> {
    let mut guard = capture.lock().unwrap_or_else(|p| p.into_inner());
    let cap = guard.cap;
    std::mem::replace(&mut *guard, CappedCapture::new(cap)).finish()
}

fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
}

#[async_trait]
impl ScriptRunner for ProcessRunner {
    fn supports(&self, shell: Shell) -> bool {
        find_on_path(command_line(shell, "").0).is_some()
    }

    async fn run(&self, spec: RunSpec, mut kill: KillSignal) -> RunOutput {
        let started_at = Utc::now();
        let (program, args) = command_line(spec.shell, &spec.script);
        let mut command = tokio::process::Command::new(program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return RunOutput {
                    end: RunEnd::SpawnFailed,
                    stdout: Vec::new(),
                    stderr: format!("kanade: could not start {program}: {e}").into_bytes(),
                    started_at,
                    finished_at: Utc::now(),
                }
            }
        };
        let pgid = child.id().unwrap_or(0);
        if let Some(path) = &spec.process_record {
            let record = crate::orphans::ProcessRecord {
                pgid,
                start_ticks: crate::orphans::start_ticks(pgid).unwrap_or(0),
            };
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            // Read back only after this agent process died and the machine
            // did not (an orphan of a machine crash is gone): no fsync.
            if let Err(e) = crate::state_files::write_atomically(path, &bytes) {
                tracing::warn!("process group not recorded: {e}");
            }
        }
        let captures: [SharedCapture; 2] =
            std::array::from_fn(|_| Arc::new(Mutex::new(CappedCapture::new(self.capture_cap))));
        let readers = [
            tokio::spawn(capture(
                child.stdout.take().expect("piped stdout"),
                captures[0].clone(),
            )),
            tokio::spawn(capture(
                child.stderr.take().expect("piped stderr"),
                captures[1].clone(),
            )),
        ];
        let killed = async {
            loop {
                if *kill.borrow() {
                    return;
                }
                if kill.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let (end, status) = tokio::select! {
            biased;
            status = child.wait() => (None, status.ok()),
            _ = tokio::time::sleep(spec.timeout) => (Some(RunEnd::TimedOut), None),
            _ = killed => (Some(RunEnd::Killed), None),
        };
        let end = match end {
            None => RunEnd::Exited(exit_code(status)),
            Some(reason) => {
                signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(self.grace, child.wait())
                    .await
                    .is_err()
                {
                    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait().await;
                }
                reason
            }
        };
        let pipes = wait_for_pipes(pgid, readers).await;
        if let Some(path) = &spec.process_record {
            let _ = std::fs::remove_file(path);
        }
        let stdout = take(&captures[0]);
        let mut stderr = take(&captures[1]);
        stderr.extend_from_slice(pipes.note());
        match end {
            RunEnd::TimedOut => stderr.extend_from_slice(
                format!(
                    "\nkanade: timed out after {}; process group terminated\n",
                    humantime::format_duration(spec.timeout)
                )
                .as_bytes(),
            ),
            RunEnd::Killed => stderr.extend_from_slice(
                b"\nkanade: killed on request (kill.<exec_id>); process group terminated\n",
            ),
            _ => {}
        }
        RunOutput {
            end,
            stdout,
            stderr,
            started_at,
            finished_at: Utc::now(),
        }
    }
}

/// How the output pipes ended once the script's own process had ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipes {
    /// Closed within the grace: every writer was gone.
    Closed,
    /// Held by processes the script left in its group; they were killed.
    KilledHolders,
    /// Still held after that by a process outside the group (its own
    /// session or group): reading stopped, output so far kept.
    StillHeld,
}

impl Pipes {
    /// The note appended to stderr.
    fn note(self) -> &'static [u8] {
        match self {
            Pipes::Closed => b"",
            Pipes::KilledHolders => b"\nkanade: processes the script left running held its output open and were killed (process group) after the script exited\n",
            Pipes::StillHeld => b"\nkanade: the output pipes were held open after the script exited by a process that left its process group (it may still be running); output written after that is not captured\n",
        }
    }
}

/// How long the pipes may stay open after the script's own process ended
/// before the rest of its group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// How long they may stay open after that kill.
const PIPE_GRACE_AFTER_KILL: Duration = Duration::from_secs(2);

/// Waits for the output pipes to close once the script's own process has
/// ended. If something the script left behind still holds them, the group
/// is killed; if even that does not close them (an escapee in another
/// session or group), the readers stop there. Either way the output read
/// until then is kept (the captures hold it).
async fn wait_for_pipes(pgid: u32, mut readers: [tokio::task::JoinHandle<()>; 2]) -> Pipes {
    async fn both(readers: &mut [tokio::task::JoinHandle<()>; 2]) {
        for reader in readers.iter_mut() {
            let _ = reader.await;
        }
    }
    if tokio::time::timeout(PIPE_GRACE, both(&mut readers))
        .await
        .is_ok()
    {
        return Pipes::Closed;
    }
    // The pipes are still open, so a member of the group may be alive.
    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    if tokio::time::timeout(PIPE_GRACE_AFTER_KILL, both(&mut readers))
        .await
        .is_ok()
    {
        return Pipes::KilledHolders;
    }
    for reader in &readers {
        reader.abort();
    }
    Pipes::StillHeld
}

fn exit_code(status: Option<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        None => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = CappedCapture::new(10);
        c.push(b"0123456789abcdefghij");
        let out = String::from_utf8(c.finish()).unwrap();
        assert!(out.starts_with("01234"), "{out}");
        assert!(out.ends_with("fghij"), "{out}");
        assert!(out.contains("20 bytes in all, 10 kept"), "{out}");
        let mut small = CappedCapture::new(10);
        small.push(b"abc");
        small.push(b"def");
        assert_eq!(small.finish(), b"abcdef");
    }
}
