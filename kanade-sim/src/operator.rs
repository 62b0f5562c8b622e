//! The operator side of a simulation: fires the workload's commands,
//! revokes and kills on the workload timeline through the real backend,
//! retrying through outages as a person would, and notes each operation
//! (with when it went through) for the property checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kanade_backend::manifest::Target;
use kanade_backend::{Backend, BackendError, FireOptions};

use crate::outcome::Operation;
use crate::plan::{JobKind, Workload};
use crate::timeline::Step;
use crate::trace::{trace_line, Recorder};

/// The backend, driven through the workload timeline.
pub(crate) struct Operator {
    /// Simulated time zero.
    pub(crate) origin: tokio::time::Instant,
    /// The backend.
    pub(crate) backend: Backend,
    /// The trace.
    pub(crate) recorder: Arc<Mutex<Recorder>>,
    /// Revokes and kills that went through.
    pub(crate) operations: Vec<Operation>,
    /// The instant of the fault driver's next step: every fault before it
    /// has been applied.
    pub(crate) faults_applied: Option<tokio::sync::watch::Receiver<Duration>>,
}

impl Operator {
    /// An operator of `backend`, tracing to `recorder`.
    pub(crate) fn new(
        origin: tokio::time::Instant,
        backend: Backend,
        recorder: Arc<Mutex<Recorder>>,
    ) -> Self {
        Self {
            origin,
            backend,
            recorder,
            operations: Vec::new(),
            faults_applied: None,
        }
    }

    fn trace(&self, line: String) {
        trace_line(&self.recorder, self.origin, line);
    }

    /// Waits until the fault driver has applied every fault due by now, so
    /// an operator action and a fault at the same instant always meet in
    /// the same order (faults first).
    async fn after_faults_of_this_instant(&self) {
        let now = self.origin.elapsed();
        if let Some(applied) = &self.faults_applied {
            let mut applied = applied.clone();
            let _ = applied.wait_for(|next| *next > now).await;
        }
    }

    /// Takes the operator's `steps` of `workload`, each at its time.
    pub(crate) async fn run_workload(&mut self, workload: &Workload, steps: Vec<(Duration, Step)>) {
        self.revoke_up_front(workload).await;
        let mut fired: BTreeMap<usize, String> = BTreeMap::new();
        for (at, step) in steps {
            tokio::time::sleep_until(self.origin + at).await;
            self.after_faults_of_this_instant().await;
            match step {
                Step::Fire(c) => {
                    let exec_id = match workload {
                        Workload::Rollout { rollout, .. } => self.fire_rollout(rollout).await,
                        _ => self.fire(c).await,
                    };
                    if let Some(exec_id) = exec_id {
                        fired.insert(c, exec_id);
                    }
                }
                Step::Revoke(c) => {
                    let job = JobKind::RevokedInJitter.job_id();
                    if self.operate(|b| async move { b.revoke(job).await }).await {
                        self.note(fired.get(&c), "revoked");
                    }
                }
                Step::Kill(c) => {
                    if let Some(exec_id) = fired.get(&c).cloned() {
                        let id = exec_id.clone();
                        if self
                            .operate(|b| {
                                let id = id.clone();
                                async move { b.kill(&id).await.map(|_| ()) }
                            })
                            .await
                        {
                            self.note(Some(&exec_id), "killed");
                        }
                    }
                }
                Step::Fault(_) | Step::Reconnect | Step::Calm => {}
            }
        }
    }

    async fn revoke_up_front(&mut self, workload: &Workload) {
        if !matches!(workload, Workload::Commands { .. }) {
            return;
        }
        let job = JobKind::Revoked.job_id();
        if self.operate(|b| async move { b.revoke(job).await }).await {
            self.trace(format!("revoked {job}"));
        }
    }

    fn note(&mut self, exec_id: Option<&String>, what: &'static str) {
        let at = self.origin.elapsed();
        if let Some(exec_id) = exec_id {
            self.trace(format!("{what} {exec_id}"));
            self.operations.push(Operation {
                exec_id: exec_id.clone(),
                what,
                at,
            });
        }
    }

    /// Runs a backend operation, retrying every second for up to a minute
    /// while the broker is away (as an operator would). Returns whether it
    /// went through.
    async fn operate<F, Fut>(&self, operation: F) -> bool
    where
        F: Fn(Backend) -> Fut,
        Fut: std::future::Future<Output = Result<(), BackendError>>,
    {
        for _ in 0..60 {
            self.after_faults_of_this_instant().await;
            match operation(self.backend.clone()).await {
                Ok(()) => return true,
                Err(e) => {
                    self.trace(format!("operation failed, retrying: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        false
    }

    /// Execs the rollout workload's job on every agent through `rollout`,
    /// retrying through outages.
    async fn fire_rollout(
        &mut self,
        rollout: &kanade_backend::rollout::spec::RolloutSpec,
    ) -> Option<String> {
        let target = Target {
            all: true,
            ..Target::default()
        };
        let operator = kanade_backend::auth::Principal::local("sim-operator");
        for _ in 0..60 {
            self.after_faults_of_this_instant().await;
            match self
                .backend
                .exec_with(JobKind::Rollout.job_id(), &target, Some(rollout), &operator)
                .await
            {
                Ok(row) => {
                    self.trace(format!(
                        "rollout {} targeting {}",
                        row.exec_id, row.targeted
                    ));
                    return Some(row.exec_id);
                }
                Err(e) => {
                    self.trace(format!("rollout exec failed, retrying: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        None
    }

    async fn fire(&mut self, c: usize) -> Option<String> {
        let kind = JobKind::ROTATION[c % JobKind::ROTATION.len()];
        if kind == JobKind::RevokedInJitter {
            let job = kind.job_id();
            if self.operate(|b| async move { b.activate(job).await }).await {
                // Not traced (the trace is the bus); the checker needs it:
                // a revoke holds until the job is activated again.
                self.operations.push(Operation {
                    exec_id: format!("job:{job}"),
                    what: "activated",
                    at: self.origin.elapsed(),
                });
            }
        }
        let target = Target {
            all: true,
            ..Target::default()
        };
        for _ in 0..60 {
            let options = FireOptions {
                deadline_at: (kind == JobKind::Late)
                    .then(|| self.backend.now() - chrono::Duration::seconds(1)),
                retry: kind.retry(),
                jitter_secs: Some(kind.jitter_secs()),
                exec_id: None,
                schedule_id: None,
                approved: false,
                rollout: None,
            };
            self.after_faults_of_this_instant().await;
            match self.backend.fire(kind.job_id(), &target, options).await {
                Ok(row) => {
                    self.trace(format!(
                        "fired {} {} targeting {}",
                        row.job_id, row.exec_id, row.targeted
                    ));
                    return Some(row.exec_id);
                }
                Err(e) => {
                    self.trace(format!("fire of {} failed, retrying: {e}", kind.job_id()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        None
    }
}
