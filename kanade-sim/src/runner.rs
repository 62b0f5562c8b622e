//! [`SimRunner`]: runs "scripts" without processes and records every
//! invocation (who, which request, which attempt, when, how it ended) so
//! properties can count real runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kanade_agent::scripted::script_field;
use kanade_agent::{kill_requested, Clock, KillSignal, RunEnd, RunOutput, RunSpec, ScriptRunner};
use kanade_core::wire::Shell;

/// One call of the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The agent.
    pub pc: String,
    /// The command's request id.
    pub request_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Simulated time the run started.
    pub started: Duration,
    /// How it ended and when; `None` if the agent died under it.
    pub ended: Option<(RunEnd, Duration)>,
}

/// Runs simulated scripts written as `key=value;…`:
/// `sleep=<secs>` (default 0), `sleep_spread=<secs>` (plus 0..secs by a
/// hash of the pc), `exit=<code>` (default 0), `out_bytes=<n>` (stdout of
/// n bytes), `fail_pct=<p>;fail_seed=<s>` (exit 1 on p % of the pcs, by a
/// hash of the pc and s). Shared by every agent of a fleet;
/// [`SimRunner::for_agent`] gives each agent its own handle.
pub struct SimRunner {
    clock: Arc<dyn Clock>,
    origin: tokio::time::Instant,
    invocations: Mutex<Vec<Invocation>>,
}

impl SimRunner {
    /// A runner whose runs are stamped from `clock` and timed from now.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            origin: tokio::time::Instant::now(),
            invocations: Mutex::new(Vec::new()),
        })
    }

    /// The runner agent `pc` uses.
    pub fn for_agent(self: &Arc<Self>, pc: &str) -> Arc<dyn ScriptRunner> {
        Arc::new(AgentRunner {
            shared: self.clone(),
            pc: pc.to_owned(),
        })
    }

    /// Every invocation so far, in start order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Invocation>> {
        self.invocations.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// FNV-1a of the pc name and a seed: which pcs a script's `fail_pct`
/// picks, and its `sleep_spread` (stable across runs).
pub fn pc_hash(pc: &str, seed: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in pc.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

struct AgentRunner {
    shared: Arc<SimRunner>,
    pc: String,
}

#[async_trait]
impl ScriptRunner for AgentRunner {
    fn supports(&self, shell: Shell) -> bool {
        matches!(shell, Shell::Sh | Shell::Bash)
    }

    async fn run(&self, spec: RunSpec, mut kill: KillSignal) -> RunOutput {
        let index = {
            let mut invocations = self.shared.lock();
            invocations.push(Invocation {
                pc: self.pc.clone(),
                request_id: spec.request_id.clone(),
                attempt: spec.attempt,
                started: self.shared.elapsed(),
                ended: None,
            });
            invocations.len() - 1
        };
        let started_at = self.shared.clock.now();
        let spread = script_field(&spec.script, "sleep_spread").unwrap_or(0);
        let spread = if spread > 0 {
            pc_hash(&self.pc, 0) % spread
        } else {
            0
        };
        let sleep = Duration::from_secs(script_field(&spec.script, "sleep").unwrap_or(0) + spread);
        let fails = script_field(&spec.script, "fail_pct").is_some_and(|pct| {
            let seed = script_field(&spec.script, "fail_seed").unwrap_or(0);
            pc_hash(&self.pc, seed) % 100 < pct
        });
        let end = tokio::select! {
            biased;
            _ = kill_requested(&mut kill) => RunEnd::Killed,
            _ = tokio::time::sleep(spec.timeout) => RunEnd::TimedOut,
            _ = tokio::time::sleep(sleep) => {
                if fails {
                    RunEnd::Exited(1)
                } else {
                    RunEnd::Exited(script_field(&spec.script, "exit").unwrap_or(0) as i32)
                }
            }
        };
        if let Some(invocation) = self.shared.lock().get_mut(index) {
            invocation.ended = Some((end, self.shared.elapsed()));
        }
        let stdout_len = script_field(&spec.script, "out_bytes").unwrap_or(0) as usize;
        RunOutput {
            end,
            stdout: vec![b'x'; stdout_len],
            stderr: Vec::new(),
            started_at,
            finished_at: self.shared.clock.now(),
        }
    }
}
