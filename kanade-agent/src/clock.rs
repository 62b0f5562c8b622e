//! Where the agent reads "now" from.

use chrono::{DateTime, Utc};

/// A source of wall-clock time for decisions (deadlines, staleness).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that advances with tokio time from a fixed start: under
/// `tokio::time::pause()` it makes deadline and staleness decisions
/// deterministic.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `start` now (in tokio time).
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        self.start + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}
