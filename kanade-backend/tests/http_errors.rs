//! The HTTP API's error answers, through the real router on a real
//! listener: internal failures (the database, the transport) answer 500,
//! bad input 4xx, always with the body `{"error": …, "details": …}`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::sync::Arc;

use kanade_backend::{Backend, BackendSettings};
use kanade_core::transport::fault::{FaultPlan, FaultRates, FaultyTransport};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::Transport;
use serde_json::{json, Value};

mod common;
use common::serve;

const JOB: &str =
    "id: echo\nversion: \"1\"\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n";

async fn open(transport: Arc<dyn Transport>, db: &Path) -> Backend {
    Backend::open(transport, BackendSettings::new(db))
        .await
        .unwrap()
}

/// What a request may send.
enum Send {
    Nothing,
    Json(Value),
    Raw(&'static str, Option<&'static str>),
}

/// One request (ureq blocks, so it runs on the blocking pool): the status
/// and the body as JSON.
async fn call(method: &'static str, url: String, send: Send) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = match (method, send) {
            ("GET", _) => agent.get(&url).call(),
            ("PUT", _) => agent.put(&url).send_empty(),
            ("POST", Send::Nothing) => agent.post(&url).send_empty(),
            ("POST", Send::Json(body)) => agent.post(&url).send_json(body),
            ("POST", Send::Raw(body, Some(kind))) => {
                agent.post(&url).header("content-type", kind).send(body)
            }
            ("POST", Send::Raw(body, None)) => agent.post(&url).send(body),
            (other, _) => panic!("no {other} here"),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: {status} {text:?} is not JSON: {e}"));
        (status, body)
    })
    .await
    .unwrap()
}

/// Asserts `body` is the API's error body.
fn is_error_body(body: &Value) -> &str {
    let object = body.as_object().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(object.len(), 2, "{body}");
    assert!(object.contains_key("details"), "{body}");
    object["error"].as_str().unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test]
async fn a_broken_database_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backend.db");
    let backend = open(Arc::new(MemoryTransport::new()), &path).await;
    let base = serve(backend).await;
    let (status, body) = call("GET", format!("{base}/api/executions"), Send::Nothing).await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = call("GET", format!("{base}/api/executions/e1"), Send::Nothing).await;
    assert_eq!(status, 404, "a missing execution is the caller's problem");

    // Break the store behind the backend's back.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE executions; DROP TABLE freeze;")
        .unwrap();
    for (method, endpoint, send) in [
        ("GET", "/api/executions", Send::Nothing),
        ("GET", "/api/executions/e1", Send::Nothing),
        ("GET", "/api/freeze", Send::Nothing),
        (
            "POST",
            "/api/freeze",
            Send::Json(json!({"reason": "release"})),
        ),
    ] {
        let (status, body) = call(method, format!("{base}{endpoint}"), send).await;
        assert_eq!(status, 500, "{method} {endpoint}: {body}");
        let error = is_error_body(&body);
        assert!(
            error.contains("the database failed"),
            "{method} {endpoint}: {error}"
        );
        assert!(
            !error.contains("no such table"),
            "internal detail leaked to the client: {error}"
        );
    }
}

#[tokio::test]
async fn a_transport_failure_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let faulty = FaultyTransport::new(memory, FaultPlan::Random(FaultRates::none(7)));
    let broker = faulty.injector();
    let backend = open(Arc::new(faulty), &dir.path().join("backend.db")).await;
    let base = serve(backend).await;
    let (status, body) = call(
        "POST",
        format!("{base}/api/jobs"),
        Send::Json(json!({"yaml": JOB})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    broker.disconnect();
    for (method, endpoint, send) in [
        ("GET", "/api/jobs", Send::Nothing),
        ("GET", "/api/schedules", Send::Nothing),
        ("POST", "/api/jobs/echo/revoke", Send::Nothing),
        (
            "POST",
            "/api/jobs/echo/exec",
            Send::Json(json!({"all": true})),
        ),
        ("POST", "/api/jobs", Send::Json(json!({"yaml": JOB}))),
    ] {
        let (status, body) = call(method, format!("{base}{endpoint}"), send).await;
        assert_eq!(status, 500, "{method} {endpoint}: {body}");
        assert!(
            is_error_body(&body).starts_with("internal error: the message transport failed"),
            "{body}"
        );
    }
    // A schedule naming a job the store cannot look up is not "no such job".
    let schedule = "id: nightly\njob_id: echo\nwhen:\n  per_target: once\ntarget:\n  all: true\n";
    let (status, body) = call(
        "POST",
        format!("{base}/api/schedules"),
        Send::Json(json!({"yaml": schedule})),
    )
    .await;
    assert_eq!(status, 500, "{body}");

    broker.reconnect();
    let (status, body) = call("GET", format!("{base}/api/jobs"), Send::Nothing).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bad_input_answers_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(
        Arc::new(MemoryTransport::new()),
        &dir.path().join("backend.db"),
    )
    .await;
    let base = serve(backend).await;
    let bad_job = "id: x\nversion: 1\nexecute:\n  shell: sh\n  script: echo\n  timeout: soon\n";
    let missing_job =
        "id: nightly\njob_id: nope\nwhen:\n  per_target: once\ntarget:\n  all: true\n";
    let cases = [
        (
            "POST",
            "/api/jobs",
            Send::Json(json!({"yaml": bad_job})),
            422,
        ),
        (
            "POST",
            "/api/schedules",
            Send::Json(json!({"yaml": missing_job})),
            400,
        ),
        (
            "POST",
            "/api/jobs/nope/exec",
            Send::Json(json!({"all": true})),
            404,
        ),
        ("POST", "/api/jobs/nope/revoke", Send::Nothing, 404),
        ("POST", "/api/executions/a%20b/kill", Send::Nothing, 400),
        ("POST", "/api/executions/e1/kill", Send::Nothing, 404),
        ("GET", "/api/schedules/nope/preview", Send::Nothing, 404),
        (
            "GET",
            "/api/schedules/nope/preview?n=many",
            Send::Nothing,
            400,
        ),
        (
            "POST",
            "/api/freeze",
            Send::Json(json!({"until": "soon"})),
            400,
        ),
        (
            "POST",
            "/api/jobs",
            Send::Raw("{\"yaml\":", Some("application/json")),
            400,
        ),
        (
            "POST",
            "/api/jobs",
            Send::Raw("{\"yml\": \"\"}", Some("application/json")),
            422,
        ),
        ("POST", "/api/jobs", Send::Raw("{}", None), 415),
        ("GET", "/api/nowhere", Send::Nothing, 404),
        ("PUT", "/api/jobs", Send::Nothing, 405),
    ];
    for (method, endpoint, send, expected) in cases {
        let (status, body) = call(method, format!("{base}{endpoint}"), send).await;
        assert_eq!(status, expected, "{method} {endpoint}: {body}");
        is_error_body(&body);
    }
    let (_, body) = call(
        "POST",
        format!("{base}/api/jobs"),
        Send::Json(json!({"yaml": bad_job})),
    )
    .await;
    assert_eq!(body["details"][0]["field"], "execute.timeout");
    assert_eq!(body["details"][0]["line"], 6);
}

/// Case 8 of the reliability issue: every script the manifest rules accept
/// can be uploaded (a large one, an escape-heavy one); one over the 4 MiB
/// rule is refused by the manifest check naming its line, not by the HTTP
/// layer.
#[tokio::test]
async fn case_8_every_script_the_rules_accept_can_be_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(
        Arc::new(MemoryTransport::new()),
        &dir.path().join("backend.db"),
    )
    .await;
    let base = serve(backend).await;
    let yaml =
        "id: big\nversion: 1\nexecute:\n  shell: sh\n  script_file: big.sh\n  timeout: 30s\n";
    let upload = |body: String| Send::Json(json!({"yaml": yaml, "script_files": {"big.sh": body}}));
    for (version, what, body) in [
        ("1", "3.4 MB of text", "echo ok\n".repeat(3_420_000 / 8)),
        ("2", "3.9 MB of control bytes", "\u{1}".repeat(3_900_000)),
    ] {
        // Each its own version (a version's content is immutable).
        let yaml = yaml.replace("version: 1", &format!("version: {version}"));
        let upload = Send::Json(json!({"yaml": yaml, "script_files": {"big.sh": body}}));
        let (status, answer) = call("POST", format!("{base}/api/jobs"), upload).await;
        assert_eq!(status, 200, "{what}: {answer}");
    }
    let (status, answer) = call(
        "POST",
        format!("{base}/api/jobs"),
        upload("x".repeat(4 * 1024 * 1024 + 1)),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["details"][0]["line"], 5, "{answer}");
    assert!(
        answer["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most"),
        "{answer}"
    );
}

/// Issue 23, item 10: every bad request body — unparsable JSON, a missing
/// or mistyped field, an unknown target key, the wrong content type — is
/// answered with the JSON error body, never plain text; the results of an
/// execution that does not exist are 404, not `200 []`; and a kill of a
/// finished execution changes nothing and says so.
#[tokio::test]
async fn item_10_bad_bodies_are_json_errors_and_unknown_executions_404() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(Arc::new(MemoryTransport::new()), &dir.path().join("b.db")).await;
    backend.apply_job(JOB, &Default::default()).await.unwrap();
    let base = serve(backend.clone()).await;
    for (endpoint, send) in [
        (
            "/api/jobs",
            Send::Raw("{not json", Some("application/json")),
        ),
        ("/api/jobs", Send::Json(json!({"yml": JOB}))),
        ("/api/jobs", Send::Json(json!({"yaml": 7}))),
        ("/api/jobs/echo/exec", Send::Json(json!({"everyone": true}))),
        ("/api/jobs/echo/exec", Send::Json(json!({"pcs": "pc-1"}))),
        ("/api/jobs/echo/pin", Send::Json(json!({}))),
        ("/api/freeze", Send::Json(json!({"until": 5}))),
        ("/api/jobs", Send::Raw("yaml: x", Some("text/plain"))),
        ("/api/jobs", Send::Raw("{}", None)),
    ] {
        let (status, body) = call("POST", format!("{base}{endpoint}"), send).await;
        assert!((400..500).contains(&status), "{endpoint}: {status} {body}");
        is_error_body(&body);
    }
    for endpoint in [
        "/api/executions/no-such-exec/results",
        "/api/executions/no-such-exec",
    ] {
        let (status, body) = call("GET", format!("{base}{endpoint}"), Send::Nothing).await;
        assert_eq!(status, 404, "{endpoint}: {body}");
        assert!(is_error_body(&body).contains("no-such-exec"), "{body}");
    }
    let (status, body) = call(
        "POST",
        format!("{base}/api/executions/no-such-exec/kill"),
        Send::Nothing,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}
