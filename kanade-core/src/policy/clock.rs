//! Clock skew between agents and the backend (DESIGN §7 deadlines, issue
//! "agents' own clocks decide online state and deadlines").
//!
//! Times that mean something fleet-wide — a command's `deadline_at`, an
//! agent's last sighting — are the **backend's** clock. An agent's clock
//! may be minutes off, so:
//!
//! - the backend records an agent as seen when *it* receives the
//!   heartbeat, and keeps the agent's offset ([`offset`]: heartbeat time
//!   minus receive time; positive = the agent runs fast), flagged when
//!   [`is_large`];
//! - the agent estimates the same offset from commands it receives live
//!   (their `issued_at`, the backend's clock at publish), and judges a
//!   deadline by [`OffsetEstimate::fleet_now`]: its own clock corrected by
//!   the estimate.
//!
//! Network transit makes a live sample slightly larger than the true
//! offset (milliseconds), which errs towards running a command, never
//! towards skipping one that was still in time.

use chrono::{DateTime, Duration, Utc};

/// An offset beyond this (either way) is reported as skew: heartbeats
/// every 30 s and a 90 s online window tolerate less, and deadlines of a
/// few minutes are distorted by more.
pub const SKEW_WARNING: Duration = Duration::seconds(30);

/// How far the clock that stamped `reported_at` runs ahead of the clock
/// that read `received_at` (negative: behind), for a message delivered
/// without delay.
pub fn offset(reported_at: DateTime<Utc>, received_at: DateTime<Utc>) -> Duration {
    reported_at - received_at
}

/// Whether `offset` is large enough to report.
pub fn is_large(offset: Duration) -> bool {
    offset.abs() > SKEW_WARNING
}

/// An agent's running estimate of its offset from the backend's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetEstimate {
    latest: Option<Duration>,
}

impl OffsetEstimate {
    /// Takes a sample: a command issued at `issued_at` (backend clock)
    /// received live at `received_at` (agent clock). Returns the new
    /// offset.
    pub fn sample(&mut self, issued_at: DateTime<Utc>, received_at: DateTime<Utc>) -> Duration {
        let sample = offset(received_at, issued_at);
        self.latest = Some(sample);
        sample
    }

    /// The estimate (`None` before the first sample).
    pub fn offset(&self) -> Option<Duration> {
        self.latest
    }

    /// The backend's clock now, as well as this agent can tell: its own
    /// `now` less the estimated offset (its own clock before any sample).
    pub fn fleet_now(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.latest.unwrap_or_else(Duration::zero)
    }

    /// [`fleet_now`](Self::fleet_now) for judging a command issued at
    /// `issued_at`: never earlier than that, since the backend's clock had
    /// reached it when it published. This bounds a slow agent with no
    /// sample yet (a command replayed after an outage): a deadline before
    /// the issue time has passed whatever its clock says.
    pub fn fleet_now_for(
        &self,
        now: DateTime<Utc>,
        issued_at: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let estimate = self.fleet_now(now);
        issued_at.map_or(estimate, |issued| estimate.max(issued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_fast_and_a_slow_agent_both_see_the_backend_clock() {
        // 10 minutes fast: a command issued at 0 arrives at +600 agent time.
        let mut fast = OffsetEstimate::default();
        assert_eq!(fast.fleet_now(at(600)), at(600), "no sample: own clock");
        fast.sample(at(0), at(600));
        assert_eq!(fast.offset(), Some(Duration::seconds(600)));
        assert_eq!(fast.fleet_now(at(660)), at(60));
        // 3 minutes slow.
        let mut slow = OffsetEstimate::default();
        slow.sample(at(0), at(-180));
        assert_eq!(slow.fleet_now(at(-120)), at(60));
        assert!(is_large(Duration::seconds(-180)) && is_large(Duration::seconds(600)));
        assert!(!is_large(Duration::seconds(30)) && !is_large(Duration::seconds(-2)));
    }

    #[test]
    fn the_issue_time_bounds_an_agent_without_a_sample() {
        let none = OffsetEstimate::default();
        // 10 minutes slow, no sample: its clock says -600, the command was
        // issued at 0, so it is at least 0 on the backend's clock.
        assert_eq!(none.fleet_now_for(at(-600), Some(at(0))), at(0));
        assert_eq!(none.fleet_now_for(at(-600), None), at(-600));
        // A sample beats the bound when it says later.
        let mut fast = OffsetEstimate::default();
        fast.sample(at(0), at(600));
        assert_eq!(fast.fleet_now_for(at(700), Some(at(50))), at(100));
    }

    proptest! {
        /// Whatever the skew, the corrected clock is the backend's, up to
        /// the transit of the sampled command.
        #[test]
        fn correction_removes_any_skew(
            skew in -86_400i64..86_400,
            transit_ms in 0i64..2_000,
            later in 0i64..100_000,
        ) {
            let mut estimate = OffsetEstimate::default();
            let issued = at(0);
            let received = issued + Duration::seconds(skew) + Duration::milliseconds(transit_ms);
            estimate.sample(issued, received);
            let backend_now = at(later);
            let agent_now = backend_now + Duration::seconds(skew);
            let corrected = estimate.fleet_now(agent_now);
            prop_assert_eq!(backend_now - corrected, Duration::milliseconds(transit_ms));
        }
    }
}
