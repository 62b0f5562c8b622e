//! The shared conformance suite every transport must pass.
//!
//! Each check exercises one behaviour of the contract against a fresh
//! transport from a factory. [`run_all`] runs every check and returns a
//! [`ConformanceReport`] saying which passed, which failed and which were
//! skipped — a check is skipped only when the transport's
//! [`Capabilities`] say the behaviour is absent.
//!
//! Checks are generic over `T: Transport + ?Sized`, so the same suite runs
//! on a concrete transport and through `Arc<dyn Transport>`.

mod consumer;
mod kv;
mod log;
mod object;

pub use object::GeneratedBody;

use consumer::{
    ack_stops_redelivery, ack_wait_expiry_redelivers, cancelled_next_loses_nothing,
    durable_consumer_resumes_by_name, late_ack_still_counts, max_deliver_stops_redelivery,
    nak_redelivers, reopened_consumer_takes_new_filter,
};
use log::{
    dedup_window_drops_duplicates, fan_out_to_many_subscribers, invalid_subjects_are_rejected,
    late_consumer_replays_last_per_subject, needs_dedup, payload_too_large_is_rejected,
    stream_create_is_idempotent, stream_keeps_last_per_subject, wildcard_matching,
};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{Capabilities, Transport};

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The behaviour holds.
    Passed,
    /// Not run: the transport's capabilities say the behaviour is absent.
    Skipped(String),
    /// The behaviour does not hold; says how.
    Failed(String),
}

/// Every check's outcome for one transport.
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// The transport's name (from its capabilities).
    pub transport: &'static str,
    /// `(check, outcome)` in suite order.
    pub results: Vec<(&'static str, Outcome)>,
}

impl ConformanceReport {
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// How many checks were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, o)| pick(o)).count()
    }

    /// Panics with the whole report if any check failed.
    pub fn assert_passed(&self) {
        assert_eq!(self.failed(), 0, "conformance failures:\n{self}");
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of {}: {} passed, {} failed, {} skipped",
            self.transport,
            self.passed(),
            self.failed(),
            self.skipped()
        )?;
        for (name, outcome) in &self.results {
            match outcome {
                Outcome::Passed => writeln!(f, "  pass  {name}")?,
                Outcome::Skipped(why) => writeln!(f, "  skip  {name}: {why}")?,
                Outcome::Failed(why) => writeln!(f, "  FAIL  {name}: {why}")?,
            }
        }
        Ok(())
    }
}

/// The result of one check.
pub type CheckResult = Result<(), String>;

type CheckFuture = Pin<Box<dyn Future<Output = CheckResult>>>;

/// One conformance check.
pub struct Check<T: ?Sized> {
    /// Its name in the report.
    pub name: &'static str,
    /// `Some(reason)` when the capabilities rule the check out.
    pub skip_if: fn(&Capabilities) -> Option<String>,
    /// Runs it.
    pub run: fn(Arc<T>) -> CheckFuture,
}

/// Longest a single check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Every check, in suite order.
pub fn checks<T: Transport + ?Sized + 'static>() -> Vec<Check<T>> {
    let mut all = message_log_checks::<T>();
    all.extend(kv::checks::<T>());
    all.extend(object::checks::<T>());
    all
}

/// The message log checks, in suite order: publish/subscribe and streams
/// come from `log`, durable consumers and cancel safety from `consumer`.
fn message_log_checks<T: Transport + ?Sized + 'static>() -> Vec<Check<T>> {
    vec![
        check!(wildcard_matching, always),
        check!(fan_out_to_many_subscribers, always),
        check!(invalid_subjects_are_rejected, always),
        check!(payload_too_large_is_rejected, always),
        check!(stream_create_is_idempotent, always),
        check!(stream_keeps_last_per_subject, always),
        check!(late_consumer_replays_last_per_subject, always),
        check!(ack_stops_redelivery, always),
        check!(nak_redelivers, always),
        check!(ack_wait_expiry_redelivers, always),
        check!(max_deliver_stops_redelivery, always),
        check!(durable_consumer_resumes_by_name, always),
        check!(late_ack_still_counts, always),
        check!(reopened_consumer_takes_new_filter, always),
        check!(dedup_window_drops_duplicates, needs_dedup),
        check!(cancelled_next_loses_nothing, always),
    ]
}

/// Runs every check, each against a fresh transport from `factory`.
pub async fn run_all<T, F, Fut>(factory: F) -> ConformanceReport
where
    T: Transport + ?Sized + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<T>>,
{
    run_selected(factory, |_| true).await
}

/// Runs the checks whose name passes `select`.
pub async fn run_selected<T, F, Fut>(factory: F, select: impl Fn(&str) -> bool) -> ConformanceReport
where
    T: Transport + ?Sized + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<T>>,
{
    let mut transport_name = "unknown";
    let mut results = Vec::new();
    for check in checks::<T>().into_iter().filter(|c| select(c.name)) {
        let transport = factory().await;
        let capabilities = transport.capabilities();
        transport_name = capabilities.name;
        let outcome = match (check.skip_if)(&capabilities) {
            Some(reason) => Outcome::Skipped(reason),
            None => match tokio::time::timeout(CHECK_TIMEOUT, (check.run)(transport)).await {
                Ok(Ok(())) => Outcome::Passed,
                Ok(Err(why)) => Outcome::Failed(why),
                Err(_) => Outcome::Failed(format!("did not finish within {CHECK_TIMEOUT:?}")),
            },
        };
        results.push((check.name, outcome));
    }
    ConformanceReport {
        transport: transport_name,
        results,
    }
}

/// Capability filter for checks every transport must pass.
fn always(_: &Capabilities) -> Option<String> {
    None
}

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// Builds a [`Check`] from an `async fn(Arc<T>) -> CheckResult`.
macro_rules! check {
    ($name:ident, $skip:expr) => {
        $crate::transport::conformance::Check::<T> {
            name: stringify!($name),
            skip_if: $skip,
            run: |t| Box::pin($name(t)),
        }
    };
}
pub(crate) use check;

/// Maps any displayable error into a check failure with context.
fn fail<E: fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

/// Waits at most `within` for a future's value.
async fn within<F: Future>(within: Duration, what: &str, fut: F) -> Result<F::Output, String> {
    tokio::time::timeout(within, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {within:?}"))
}
