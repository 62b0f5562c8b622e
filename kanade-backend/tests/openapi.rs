//! The OpenAPI 3.1 document: served at `/api/openapi.json` without a
//! credential and equal to [`document`]; valid OpenAPI 3.1 (parsed by the
//! `oas3` crate, every `$ref` resolves, every path parameter is declared,
//! operation ids are unique); every route of the table is in it with its
//! role, and every guarded operation asks for the bearer credential.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::sync::Arc;

use kanade_backend::http::openapi::{document, path_parameters};
use kanade_backend::http::routes::ROUTES;
use kanade_backend::{Backend, BackendSettings};
use kanade_core::transport::memory::MemoryTransport;
use kanade_core::transport::Transport;
use serde_json::Value;

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    found.push(v.as_str().unwrap());
                } else {
                    refs(v, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let text = serde_json::to_string(&doc).unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not OpenAPI 3.1: {e}"));
    assert!(spec.paths.as_ref().is_some_and(|p| p.len() > 40));

    // Every reference points into the document.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }

    // Path parameters declared; operation ids unique.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(ids.insert(operation["operationId"].as_str().unwrap().to_owned()));
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared, path_parameters(path), "{method} {path}");
            assert!(operation["responses"].as_object().unwrap().len() >= 2);
        }
    }

    // Every route of the table, with its role and the bearer credential.
    for rule in ROUTES {
        let operation = &doc["paths"][rule.path][rule.method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} missing",
            rule.method,
            rule.path
        );
        assert_eq!(operation["x-kanade-role"], serde_json::json!(rule.role));
        assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]));
    }
    // Types are described, not left blank: the exec body names its targets.
    let exec = &doc["paths"]["/api/jobs/{id}/exec"]["post"];
    let body_ref = exec["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let body = doc.pointer(body_ref.strip_prefix('#').unwrap()).unwrap();
    for field in ["all", "groups", "pcs", "rollout"] {
        assert!(body["properties"].get(field).is_some(), "{body}");
    }
    // Answers besides the success: 202 awaiting approval, 503 not ready.
    assert!(exec["responses"]["202"]["content"]["application/json"].is_object());
    let not_ready = &doc["paths"]["/readyz"]["get"]["responses"]["503"];
    assert_eq!(
        not_ready["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Readiness"
    );
    let wait = &doc["paths"]["/api/executions/{id}"]["get"]["parameters"];
    let names: Vec<&str> = wait
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "after", "wait"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_without_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let backend = Backend::open(transport, BackendSettings::new(dir.path().join("b.db")))
        .await
        .unwrap();
    // Token authentication, and no token sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, kanade_backend::http::router(backend))
            .await
            .unwrap();
    });
    let served: Value = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(format!("{base}/api/openapi.json"))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(served, document());
}
