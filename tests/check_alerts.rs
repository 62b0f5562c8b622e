//! Check alerts: a pc whose check goes to `fail` (or the states
//! `check.alert.on` names) is announced on `alerts.<check>.<pc>` and POSTed
//! to the backend's webhook — once per transition, retried while the
//! webhook fails, never for a state the pc was already in.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{finished, run_agent, wait_for, wait_for_agent};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::db::CheckAlertRecord;
use kanade::backend::manifest::Target;
use kanade::backend::BackendSettings;
use kanade::core::names::SubjectToken;
use kanade::core::transport::Transport;

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<CheckAlertRecord>>>,
    refuse_next: Arc<AtomicU32>,
}

/// A local HTTP receiver: refuses (503) as many requests as `refuse_next`
/// says, then records each alert.
async fn receiver() -> (String, Receiver) {
    let state = Receiver::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(state): axum::extract::State<Receiver>,
                 axum::Json(alert): axum::Json<CheckAlertRecord>| async move {
                    if state
                        .refuse_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    state.received.lock().unwrap().push(alert);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_is_announced_once_on_the_bus_and_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, hook) = receiver().await;
    let transport: Arc<dyn Transport> = kanade::transport::open("memory").await.unwrap();
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.alert_webhook = Some(url);
    let backend = common::running_backend_with_hello(transport.clone(), settings).await;
    let mut alerts = transport.messages().subscribe("alerts.>").await.unwrap();
    let mut agent_settings =
        AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), dir.path().join("pc-1"));
    agent_settings.inventory = false;
    let _agent = run_agent(
        Agent::builder(agent_settings, transport.clone())
            .build()
            .unwrap(),
    );
    wait_for_agent(&backend, "pc-1").await;

    // The check reads its state from a file the test flips.
    let state_file = dir.path().join("state");
    let job = format!(
        "id: svc\nversion: \"1\"\nexecute:\n  shell: sh\n  timeout: 30s\n  script: |\n    echo \"{{\\\"status\\\": \\\"$(cat {})\\\", \\\"detail\\\": \\\"svc\\\"}}\"\ncheck: {{name: svc_up, label: Service up}}\n",
        state_file.display()
    );
    backend.apply_job(&job, &BTreeMap::new()).await.unwrap();
    let run = |state: &'static str| {
        let backend = backend.clone();
        let state_file = state_file.clone();
        async move {
            std::fs::write(&state_file, state).unwrap();
            let exec = backend
                .exec(
                    "svc",
                    &Target {
                        pcs: vec!["pc-1".into()],
                        ..Target::default()
                    },
                )
                .await
                .unwrap();
            finished(&backend, &exec.exec_id).await;
        }
    };
    run("pass").await;
    hook.refuse_next.store(1, Ordering::SeqCst); // the first delivery fails
    run("fail").await;
    run("fail").await;

    let message = tokio::time::timeout(Duration::from_secs(10), alerts.next())
        .await
        .expect("an alert on the bus")
        .unwrap();
    assert_eq!(message.subject, "alerts.svc_up.pc-1");
    let alert: CheckAlertRecord = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (
            alert.from.as_deref(),
            alert.to.as_str(),
            alert.label.as_deref()
        ),
        (Some("pass"), "fail", Some("Service up"))
    );
    wait_for("the webhook gets the alert after one refusal", || {
        let received = hook.received.clone();
        async move { !received.lock().unwrap().is_empty() }
    })
    .await;
    assert_eq!(hook.received.lock().unwrap().clone(), vec![alert]);
    // The second fail was no transition: nothing more.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), alerts.next())
            .await
            .is_err(),
        "one alert per transition"
    );
    assert_eq!(hook.received.lock().unwrap().len(), 1);
}
