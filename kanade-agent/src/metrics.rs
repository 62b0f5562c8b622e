//! The agent's own figures for Prometheus (OpenMetrics text, the
//! maintained `prometheus-client` crate), served by the binary's optional
//! `--metrics-listen` and readable by embedders through
//! [`Agent::metrics_text`](crate::Agent::metrics_text).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `kanade_agent_commands_total` | counter | commands admitted and started (a gate may then skip one) |
//! | `kanade_agent_outbox_backlog` | gauge | results and events waiting in the outbox for the broker |
//! | `kanade_agent_last_broker_contact_seconds` | gauge | Unix time of the last heartbeat the broker took (0: none yet) |
//! | `kanade_agent_in_flight` | gauge | commands running now |

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`AgentMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters the agent moves as it works.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Commands admitted and started.
    pub commands: Counter,
    last_broker_contact: AtomicI64,
}

/// Figures read when the metrics are rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentFigures {
    /// Entries waiting in the outbox.
    pub outbox_backlog: usize,
    /// Commands running now.
    pub in_flight: usize,
}

impl AgentMetrics {
    /// Records that the broker took a message at `unix_seconds`.
    pub fn broker_contact(&self, unix_seconds: i64) {
        self.last_broker_contact
            .fetch_max(unix_seconds, Ordering::Relaxed);
    }

    /// The Unix time of the last broker contact (0: none yet).
    pub fn last_broker_contact(&self) -> i64 {
        self.last_broker_contact.load(Ordering::Relaxed)
    }

    /// The metrics as OpenMetrics text (ends with `# EOF`).
    pub fn render(&self, figures: AgentFigures) -> String {
        let mut registry = Registry::with_prefix("kanade_agent");
        let gauge = |value: usize| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            g
        };
        registry.register(
            "commands",
            "Commands admitted and started",
            self.commands.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Results and events waiting in the outbox for the broker",
            gauge(figures.outbox_backlog),
        );
        let contact: Gauge = Gauge::default();
        contact.set(self.last_broker_contact());
        registry.register(
            "last_broker_contact_seconds",
            "Unix time of the last heartbeat the broker took",
            contact,
        );
        registry.register(
            "in_flight",
            "Commands running now",
            gauge(figures.in_flight),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_come_out_as_openmetrics() {
        let metrics = AgentMetrics::default();
        metrics.commands.inc();
        metrics.broker_contact(1_700_000_000);
        metrics.broker_contact(1_600_000_000);
        let text = metrics.render(AgentFigures {
            outbox_backlog: 3,
            in_flight: 1,
        });
        for line in [
            "kanade_agent_commands_total 1",
            "kanade_agent_outbox_backlog 3",
            "kanade_agent_last_broker_contact_seconds 1700000000",
            "kanade_agent_in_flight 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
