//! The one table of API routes: method, path, the least role that may call
//! it (DESIGN §10: viewer reads; operator execs, kills, revokes, pins,
//! applies, freezes, approves; admin manages tokens and reads the audit
//! trail) and the action name the audit trail records. The guard looks a
//! request up here by its matched route; a route missing from the table is
//! refused (default deny), and a test walks the table for every role.

use axum::http::Method;

use crate::auth::Role;

/// One route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRule {
    /// HTTP method.
    pub method: &'static str,
    /// The route as axum matches it (`/api/jobs/{id}/exec`).
    pub path: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// The audit trail's action name (`job.exec`, …).
    pub action: &'static str,
    /// The largest request body it takes, in bytes.
    pub body_limit: usize,
}

/// The body limit of every route but a release upload (32 MiB).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

const fn rule(
    method: &'static str,
    path: &'static str,
    role: Role,
    action: &'static str,
) -> RouteRule {
    RouteRule {
        method,
        path,
        role,
        action,
        body_limit: BODY_LIMIT,
    }
}

/// Every guarded route: the `/api` routes and `/metrics`. (`/healthz`,
/// `/readyz`, the OpenAPI document and the console's static assets are
/// open and not listed: they carry no fleet data; the console reads
/// everything through these routes with the operator's token.)
pub const ROUTES: &[RouteRule] = &[
    rule("GET", "/api/whoami", Role::Viewer, "session.whoami"),
    rule("GET", "/api/agents", Role::Viewer, "agents.list"),
    rule("GET", "/api/agents/{pc}", Role::Viewer, "agent.show"),
    rule("GET", "/api/jobs", Role::Viewer, "jobs.list"),
    rule("GET", "/api/jobs/{id}", Role::Viewer, "job.show"),
    rule("POST", "/api/jobs", Role::Operator, "job.apply"),
    rule("POST", "/api/jobs/{id}/exec", Role::Operator, "job.exec"),
    rule(
        "POST",
        "/api/jobs/{id}/revoke",
        Role::Operator,
        "job.revoke",
    ),
    rule(
        "POST",
        "/api/jobs/{id}/activate",
        Role::Operator,
        "job.activate",
    ),
    rule("POST", "/api/jobs/{id}/pin", Role::Operator, "job.pin"),
    rule("POST", "/api/jobs/{id}/unpin", Role::Operator, "job.unpin"),
    rule("GET", "/api/pins", Role::Viewer, "pins.list"),
    rule("GET", "/api/schedules", Role::Viewer, "schedules.list"),
    rule("POST", "/api/schedules", Role::Operator, "schedule.apply"),
    rule(
        "GET",
        "/api/schedules/{id}/preview",
        Role::Viewer,
        "schedule.preview",
    ),
    rule(
        "POST",
        "/api/schedules/{id}/enable",
        Role::Operator,
        "schedule.enable",
    ),
    rule(
        "POST",
        "/api/schedules/{id}/disable",
        Role::Operator,
        "schedule.disable",
    ),
    rule(
        "POST",
        "/api/schedules/{id}/approve",
        Role::Operator,
        "schedule.approve",
    ),
    rule(
        "POST",
        "/api/schedules/{id}/deny",
        Role::Operator,
        "schedule.deny",
    ),
    rule(
        "GET",
        "/api/schedule-approvals",
        Role::Viewer,
        "schedule_approvals.list",
    ),
    rule("GET", "/api/executions", Role::Viewer, "executions.list"),
    rule(
        "GET",
        "/api/executions/{id}",
        Role::Viewer,
        "execution.show",
    ),
    rule(
        "GET",
        "/api/executions/{id}/results",
        Role::Viewer,
        "execution.results",
    ),
    rule(
        "POST",
        "/api/executions/{id}/kill",
        Role::Operator,
        "execution.kill",
    ),
    rule(
        "GET",
        "/api/executions/{id}/rollout",
        Role::Viewer,
        "rollout.status",
    ),
    rule(
        "POST",
        "/api/executions/{id}/rollout/pause",
        Role::Operator,
        "rollout.pause",
    ),
    rule(
        "POST",
        "/api/executions/{id}/rollout/resume",
        Role::Operator,
        "rollout.resume",
    ),
    rule(
        "POST",
        "/api/executions/{id}/rollout/abort",
        Role::Operator,
        "rollout.abort",
    ),
    rule(
        "POST",
        "/api/executions/{id}/approve",
        Role::Operator,
        "execution.approve",
    ),
    rule(
        "POST",
        "/api/executions/{id}/deny",
        Role::Operator,
        "execution.deny",
    ),
    rule("GET", "/api/approvals", Role::Viewer, "approvals.list"),
    rule("GET", "/api/freeze", Role::Viewer, "freeze.show"),
    rule("POST", "/api/freeze", Role::Operator, "freeze.set"),
    rule("DELETE", "/api/freeze", Role::Operator, "freeze.clear"),
    rule("GET", "/api/tokens", Role::Admin, "tokens.list"),
    rule("POST", "/api/tokens", Role::Admin, "token.create"),
    rule("DELETE", "/api/tokens/{name}", Role::Admin, "token.revoke"),
    rule(
        "GET",
        "/api/inventory/{job}",
        Role::Viewer,
        "inventory.read",
    ),
    rule(
        "GET",
        "/api/inventory/{job}/history",
        Role::Viewer,
        "inventory.history",
    ),
    rule("GET", "/api/checks", Role::Viewer, "checks.list"),
    rule("GET", "/api/checks/{name}", Role::Viewer, "checks.states"),
    rule(
        "GET",
        "/api/agents/versions",
        Role::Viewer,
        "agents.versions",
    ),
    rule(
        "GET",
        "/api/agent-releases",
        Role::Viewer,
        "agent_releases.list",
    ),
    RouteRule {
        body_limit: super::agent_releases::BODY_LIMIT,
        ..rule(
            "POST",
            "/api/agent-releases",
            Role::Admin,
            "agent_release.publish",
        )
    },
    rule(
        "POST",
        "/api/agent-rollout",
        Role::Admin,
        "agent_rollout.set",
    ),
    rule(
        "GET",
        "/api/agent-rollout",
        Role::Viewer,
        "agent_rollout.show",
    ),
    rule("GET", "/api/audit", Role::Admin, "audit.list"),
    rule("GET", "/api/audit/verify", Role::Admin, "audit.verify"),
    rule("GET", "/metrics", Role::Viewer, "metrics.scrape"),
];

/// The rule for a matched route, if the table has one. A router nested
/// under a prefix (`/kanade/api/jobs` for an app that mounted kanade under
/// `/kanade`) matches the rule of its suffix.
pub fn rule_for(method: &Method, path: &str) -> Option<&'static RouteRule> {
    ROUTES.iter().find(|r| {
        r.method == method.as_str()
            && path.strip_suffix(r.path).is_some_and(|prefix| {
                prefix.is_empty() || prefix.starts_with('/') && !prefix.ends_with('/')
            })
    })
}

/// Whether a call changes state (and so is always audited).
pub fn changes_state(method: &str) -> bool {
    method != "GET" && method != "HEAD"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once_and_names_an_action() {
        for (n, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with("/api/") || a.path == "/metrics", "{a:?}");
            assert!(a.action.contains('.'), "{a:?}");
            for b in &ROUTES[n + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "twice: {a:?}");
            }
            assert_eq!(rule_for(&a.method.parse().unwrap(), a.path), Some(a));
        }
        assert_eq!(rule_for(&Method::GET, "/api/nowhere"), None);
        let nested = rule_for(&Method::POST, "/kanade/api/jobs/{id}/exec").unwrap();
        assert_eq!(nested.action, "job.exec");
        assert_eq!(rule_for(&Method::GET, "kanade/api/jobs"), None);
        assert_eq!(rule_for(&Method::GET, "/x/api/jobs/"), None);
    }

    #[test]
    fn reads_are_for_viewers_and_changes_need_more() {
        for r in ROUTES {
            if changes_state(r.method) {
                assert!(r.role >= Role::Operator, "{r:?}");
            }
        }
    }
}
