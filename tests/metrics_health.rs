//! Health and metrics on the real binaries over a real nats-server:
//! `/healthz` answers; `/readyz` is 503 naming the missing signing key,
//! then 200 once the backend runs with one (database, broker and the
//! results projector checked); `/metrics` needs a token and its counters
//! move with an exec (results stored, executions by status, API calls by
//! route, audit entries, projector lag); the agent's `--metrics-listen`
//! counts the command it ran and its last broker contact.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::Command;

use kanade::nats::test_server::NatsServer;
use serde_json::{json, Value};

mod common;
use common::{
    backend_command, create_token, free_port, spawn_quiet, wait_until, workspace_binary, KillOnDrop,
};

fn start_backend(nats: &str, db: &Path, listen: &str, extra: &[&str]) -> KillOnDrop {
    spawn_quiet(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", nats, "--listen", listen])
            .args(extra)
            .arg("--db")
            .arg(db),
    )
}

/// (status, content type, body) of a call; status 0 when nothing answers.
fn call(url: &str, token: Option<&str>, body: Option<Value>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match body {
        None => {
            let mut request = agent.get(url);
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            request.call()
        }
        Some(body) => {
            let mut request = agent.post(url);
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            request.send_json(body)
        }
    };
    let Ok(mut response) = response else {
        return (0, String::new(), String::new());
    };
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        status,
        kind,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The value of the sample `name` (with its labels, as written) in an
/// OpenMetrics text, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

#[test]
fn health_readiness_and_metrics_on_the_real_binaries() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backend.db");
    let admin = create_token(&db, "admin", "admin", &[]);
    let viewer = create_token(&db, "scraper", "viewer", &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");

    // Without a signing key: alive, not ready, and it says why.
    let unsigned = start_backend(&nats.url(), &db, &listen, &[]);
    wait_until("the backend", || {
        call(&format!("{base}/healthz"), None, None).0 == 200
    });
    wait_until("the projector's consumer", || {
        let (_, _, body) = call(&format!("{base}/readyz"), None, None);
        serde_json::from_str::<Value>(&body).is_ok_and(|v| v["projectors"]["ok"] == true)
    });
    let (status, _, body) = call(&format!("{base}/readyz"), None, None);
    assert_eq!(status, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["database"]["ok"], true, "{ready}");
    assert_eq!(ready["broker"]["ok"], true, "{ready}");
    assert_eq!(ready["signing_key"]["ok"], false, "{ready}");
    assert!(
        ready["signing_key"]["detail"]
            .as_str()
            .unwrap()
            .contains("--signing-key"),
        "{ready}"
    );
    drop(unsigned);

    // With one: ready.
    let key = dir.path().join("signing.key");
    backend_command(
        &db,
        &["keygen", "--kid", "k1", "--out", key.to_str().unwrap()],
    );
    let _backend = start_backend(
        &nats.url(),
        &db,
        &listen,
        &["--signing-key", key.to_str().unwrap()],
    );
    wait_until("readiness", || {
        call(&format!("{base}/readyz"), None, None).0 == 200
    });

    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let _agent = spawn_quiet(
        Command::new(workspace_binary("kanade-agent"))
            .args(["--transport", &nats.url(), "--pc-id", "pc-m"])
            .args(["--metrics-listen", &agent_metrics])
            .arg("--state-dir")
            .arg(dir.path().join("agent")),
    );
    let agent_url = format!("http://{agent_metrics}/metrics");
    wait_until("the agent's first broker contact", || {
        let (_, _, text) = call(&agent_url, None, None);
        sample(&text, "kanade_agent_last_broker_contact_seconds").is_some_and(|t| t > 0.0)
    });
    let (status, kind, text) = call(&agent_url, None, None);
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert_eq!(
        sample(&text, "kanade_agent_commands_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kanade_agent_outbox_backlog"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        call(&format!("http://{agent_metrics}/other"), None, None).0,
        404
    );

    // The backend's metrics need a token.
    let metrics_url = format!("{base}/metrics");
    assert_eq!(call(&metrics_url, None, None).0, 401);
    wait_until("the agent online", || {
        let (_, _, text) = call(&metrics_url, Some(&viewer), None);
        sample(&text, "kanade_agents_online") == Some(1.0)
    });
    let (status, kind, before) = call(&metrics_url, Some(&viewer), None);
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(before.ends_with("# EOF\n"), "{before}");
    let stored_before = sample(&before, "kanade_results_stored_total").unwrap();
    let audit_before = sample(&before, "kanade_audit_entries").unwrap();

    // One exec moves the counters.
    let (status, _, body) = call(
        &format!("{base}/api/jobs"),
        Some(&admin),
        Some(
            json!({"yaml": "id: hi\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n"}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &format!("{base}/api/jobs/hi/exec"),
        Some(&admin),
        Some(json!({"all": true})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the result stored", || {
        let (_, _, text) = call(&metrics_url, Some(&viewer), None);
        sample(&text, "kanade_executions{status=\"completed\"}") == Some(1.0)
    });
    // The counter moves and the acknowledgement lands just after the
    // commit the execution's status shows: wait for both.
    wait_until("the result counted and acknowledged", || {
        let (_, _, text) = call(&metrics_url, Some(&viewer), None);
        sample(&text, "kanade_results_stored_total") == Some(stored_before + 1.0)
            && sample(&text, "kanade_projector_lag_messages") == Some(0.0)
    });
    let (_, _, after) = call(&metrics_url, Some(&viewer), None);
    assert_eq!(
        sample(&after, "kanade_results_stored_total"),
        Some(stored_before + 1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "kanade_http_requests_total{route=\"/api/jobs/{id}/exec\",method=\"POST\",status=\"200\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "kanade_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"401\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, "kanade_audit_entries").unwrap() >= audit_before + 2.0,
        "apply and exec are audited: {after}"
    );
    assert_eq!(
        sample(&after, "kanade_projector_lag_messages"),
        Some(0.0),
        "{after}"
    );
    assert_eq!(sample(&after, "kanade_agents_known"), Some(1.0), "{after}");
    wait_until("the agent's count", || {
        let (_, _, text) = call(&agent_url, None, None);
        sample(&text, "kanade_agent_commands_total") == Some(1.0)
    });
}
