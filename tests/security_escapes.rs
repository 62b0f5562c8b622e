//! Ways out of a scope or around an approval, found by review, each shut:
//! weakening a job's `require_approval` below admin, taking over a job by
//! re-tagging it, a scoped admin minting or revoking wider tokens, a scoped
//! operator approving an execution outside its targets, turning on a
//! schedule outside its scope, lifting the fleet-wide freeze, and a
//! requester approving through a token it minted.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod security_common;

use kanade::backend::auth::{Role, Scopes};
use kanade::backend::http::ApiAuth;
use security_common::{scoped, Api};
use serde_json::json;

const GATED: &str = "id: gated\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: {approvals: 2, role: admin, ttl: 1h}\n";

fn upload(yaml: &str) -> serde_json::Value {
    json!({ "yaml": yaml })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_rule_is_weakened_only_by_an_admin() {
    let api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(GATED, &Default::default())
        .await
        .unwrap();
    let operator = api.token("op", Role::Operator, Scopes::default());
    let admin = api.token("root", Role::Admin, Scopes::default());
    for weaker in [
        GATED.replace(
            "require_approval: {approvals: 2, role: admin, ttl: 1h}\n",
            "",
        ),
        GATED.replace("approvals: 2", "approvals: 1"),
        GATED.replace("role: admin", "role: operator"),
    ] {
        let (status, body) = api
            .call("POST", "/api/jobs", Some(&operator), Some(upload(&weaker)))
            .await;
        assert_eq!(status, 403, "{weaker}: {body}");
    }
    // (Each change is a new version: a version's content is immutable.)
    let stronger = GATED
        .replace("approvals: 2", "approvals: 3")
        .replace("version: 1", "version: 2");
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs",
            Some(&operator),
            Some(upload(&stronger)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let removed = GATED
        .replace(
            "require_approval: {approvals: 2, role: admin, ttl: 1h}\n",
            "",
        )
        .replace("version: 1", "version: 3");
    let (status, body) = api
        .call("POST", "/api/jobs", Some(&admin), Some(upload(&removed)))
        .await;
    assert_eq!(status, 200, "an admin may: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_scoped_operator_cannot_take_over_a_job_by_retagging_it() {
    let api = Api::start(ApiAuth::default()).await;
    let safe = api.token(
        "safe-op",
        Role::Operator,
        Scopes {
            tags: vec!["safe".into()],
            ..Scopes::default()
        },
    );
    // `other` exists without the tag; a manifest re-tagging it is refused.
    let retagged = "id: other\nversion: 2\nexecute:\n  shell: sh\n  script: echo mine\n  timeout: 30s\ntags: [safe]\n";
    let (status, body) = api
        .call("POST", "/api/jobs", Some(&safe), Some(upload(retagged)))
        .await;
    assert_eq!(status, 403, "{body}");
    let fresh = "id: brand-new\nversion: 1\nexecute:\n  shell: sh\n  script: echo new\n  timeout: 30s\ntags: [safe]\n";
    let (status, body) = api
        .call("POST", "/api/jobs", Some(&safe), Some(upload(fresh)))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_admin_manages_only_tokens_inside_its_scope() {
    let api = Api::start(ApiAuth::default()).await;
    let canary_admin = api.token("canary-admin", Role::Admin, scoped(&["canary"], &[]));
    api.token("global-op", Role::Operator, Scopes::default());
    for body in [
        json!({"name": "wide", "role": "operator"}),
        json!({"name": "wider", "role": "operator", "scopes": {"groups": ["canary", "prod"]}}),
    ] {
        let (status, answer) = api
            .call("POST", "/api/tokens", Some(&canary_admin), Some(body))
            .await;
        assert_eq!(status, 403, "{answer}");
    }
    let (status, answer) = api
        .call(
            "POST",
            "/api/tokens",
            Some(&canary_admin),
            Some(json!({"name": "narrow", "role": "operator", "scopes": {"groups": ["canary"]}})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = api
        .call("DELETE", "/api/tokens/global-op", Some(&canary_admin), None)
        .await;
    assert_eq!(status, 403, "it cannot revoke a wider token");
    let (status, _) = api
        .call("DELETE", "/api/tokens/narrow", Some(&canary_admin), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_operators_stay_inside_executions_schedules_and_the_freeze() {
    let api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(
            &GATED.replace(
                "{approvals: 2, role: admin, ttl: 1h}",
                "{approvals: 1, role: operator, ttl: 1h}",
            ),
            &Default::default(),
        )
        .await
        .unwrap();
    let alice = api.token("alice", Role::Operator, Scopes::default());
    let canary = api.token("canary-op", Role::Operator, scoped(&["canary"], &[]));
    let (status, row) = api
        .call(
            "POST",
            "/api/jobs/gated/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, 202, "{row}");
    let exec = row["exec_id"].as_str().unwrap();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{exec}/approve"),
            Some(&canary),
            None,
        )
        .await;
    assert_eq!(
        status, 403,
        "an --all execution is outside a canary scope: {body}"
    );

    api.backend
        .apply_schedule("id: everywhere\njob_id: hello\nwhen:\n  per_target: once\ntarget:\n  all: true\nenabled: false\n")
        .await
        .unwrap();
    for path in [
        "/api/schedules/everywhere/enable",
        "/api/schedules/nope/enable",
    ] {
        let (status, body) = api.call("POST", path, Some(&canary), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _) = api
        .call(
            "POST",
            "/api/freeze",
            Some(&canary),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api.call("DELETE", "/api/freeze", Some(&canary), None).await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call(
            "POST",
            "/api/freeze",
            Some(&alice),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_cannot_approve_through_a_token_it_minted() {
    let api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(
            &GATED.replace("approvals: 2", "approvals: 1"),
            &Default::default(),
        )
        .await
        .unwrap();
    let boss = api.token("boss", Role::Admin, Scopes::default());
    let (status, created) = api
        .call(
            "POST",
            "/api/tokens",
            Some(&boss),
            Some(json!({"name": "boss-2", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 201);
    let second = created["token"].as_str().unwrap().to_owned();
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/gated/exec",
            Some(&boss),
            Some(json!({"all": true})),
        )
        .await;
    let exec = row["exec_id"].as_str().unwrap();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{exec}/approve"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("boss created"),
        "{body}"
    );
}
