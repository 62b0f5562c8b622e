//! What `/metrics` reports, in the Prometheus / OpenMetrics text format
//! (the maintained `prometheus-client` crate): counters the backend moves
//! as it works ([`BackendMetrics`]) and figures read from the store at
//! scrape time ([`FleetFigures`]). A leaf: the HTTP route gathers the
//! figures and calls [`BackendMetrics::render`].
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `kanade_agents_known` | gauge | | agents that ever sent a heartbeat |
//! | `kanade_agents_online` | gauge | | agents seen within the online window |
//! | `kanade_executions` | gauge | `status` | executions by status |
//! | `kanade_results_stored_total` | counter | | results the projector committed |
//! | `kanade_projector_lag_messages` | gauge | | results in the stream not yet stored (absent when the transport cannot tell) |
//! | `kanade_http_requests_total` | counter | `route`, `method`, `status` | API calls by matched route |
//! | `kanade_scheduler_fires_total` | counter | | schedule fires sent |
//! | `kanade_rollout_halts_total` | counter | | rollouts that halted themselves |
//! | `kanade_audit_entries` | gauge | | entries in the audit trail |

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the text [`BackendMetrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An API call's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route (`/api/jobs/{id}/exec`), or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code answered.
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// The backend's counters, moved where the work happens.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    /// Results committed to the store by the projector.
    pub results_stored: Counter,
    /// Schedule fires sent by the scheduler.
    pub scheduler_fires: Counter,
    /// Rollouts that halted themselves (counted once, when their halt
    /// actions run).
    pub rollout_halts: Counter,
    /// API calls by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
}

/// The method as a label: the standard ones by name, anything else (a
/// client may send any token as a method) as `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// Figures read from the store when `/metrics` is scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFigures {
    /// Agents that ever sent a heartbeat.
    pub agents_known: i64,
    /// Agents seen within the online window.
    pub agents_online: i64,
    /// Executions by status.
    pub executions: Vec<(String, i64)>,
    /// Results in the stream not yet stored, when the transport can tell.
    pub projector_lag: Option<i64>,
    /// Entries in the audit trail.
    pub audit_entries: i64,
}

impl BackendMetrics {
    /// Counts one API call. The labels come from a fixed set (matched
    /// routes, [`method_label`]), so callers cannot add series at will.
    pub fn count_request(&self, route: &str, method: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method).to_owned(),
                status,
            })
            .inc();
    }

    /// The counters and `figures` as OpenMetrics text (ends with `# EOF`).
    pub fn render(&self, figures: &FleetFigures) -> String {
        let mut registry = Registry::with_prefix("kanade");
        let gauge = |value: i64| {
            let g: Gauge = Gauge::default();
            g.set(value);
            g
        };
        registry.register(
            "agents_known",
            "Agents that ever sent a heartbeat",
            gauge(figures.agents_known),
        );
        registry.register(
            "agents_online",
            "Agents seen within the online window",
            gauge(figures.agents_online),
        );
        let executions = Family::<StatusLabel, Gauge>::default();
        for (status, count) in &figures.executions {
            executions
                .get_or_create(&StatusLabel {
                    status: status.clone(),
                })
                .set(*count);
        }
        registry.register("executions", "Executions by status", executions);
        registry.register(
            "results_stored",
            "Results the projector committed to the store",
            self.results_stored.clone(),
        );
        if let Some(lag) = figures.projector_lag {
            registry.register(
                "projector_lag_messages",
                "Results in the stream not yet stored",
                gauge(lag),
            );
        }
        registry.register(
            "http_requests",
            "API calls by matched route, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "scheduler_fires",
            "Schedule fires sent",
            self.scheduler_fires.clone(),
        );
        registry.register(
            "rollout_halts",
            "Rollouts that halted themselves",
            self.rollout_halts.clone(),
        );
        registry.register(
            "audit_entries",
            "Entries in the audit trail",
            gauge(figures.audit_entries),
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
    fn counters_and_figures_come_out_as_openmetrics() {
        let metrics = BackendMetrics::default();
        metrics.results_stored.inc_by(3);
        metrics.count_request("/api/jobs", "GET", 200);
        metrics.count_request("/api/jobs", "GET", 200);
        let text = metrics.render(&FleetFigures {
            agents_known: 5,
            agents_online: 4,
            executions: vec![("completed".into(), 2)],
            projector_lag: Some(0),
            audit_entries: 9,
        });
        for line in [
            "kanade_agents_known 5",
            "kanade_agents_online 4",
            "kanade_executions{status=\"completed\"} 2",
            "kanade_results_stored_total 3",
            "kanade_projector_lag_messages 0",
            "kanade_http_requests_total{route=\"/api/jobs\",method=\"GET\",status=\"200\"} 2",
            "kanade_scheduler_fires_total 0",
            "kanade_audit_entries 9",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        metrics.count_request("/api/jobs", "FOO1", 405);
        metrics.count_request("/api/jobs", "FOO2", 405);
        let text = metrics.render(&FleetFigures::default());
        assert!(
            text.contains("method=\"other\",status=\"405\"} 2"),
            "{text}"
        );
        let unknown_lag = metrics.render(&FleetFigures::default());
        assert!(!unknown_lag.contains("projector_lag"), "{unknown_lag}");
    }
}
