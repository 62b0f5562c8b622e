//! Who may do what, through the real router on a real listener: the route
//! × role table (every refusal audited), scopes, token expiry and
//! revocation, and OIDC tokens checked against the issuer's keys. M-of-N
//! approvals are in `security_approvals.rs`, the audit trail's tamper
//! checks in `security_audit.rs`; the harness is in `security_common/`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod security_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kanade::backend::auth::oidc::{JwksSource, OidcConfig, OidcVerifier};
use kanade::backend::auth::{Role, Scopes};
use kanade::backend::http::{routes::ROUTES, ApiAuth};
use security_common::{concrete, scoped, Api, TestKey};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_the_table_says_and_every_refusal_is_audited() {
    let api = Api::start(ApiAuth::default()).await;
    let tokens = [
        (
            Role::Viewer,
            api.token("v", Role::Viewer, Scopes::default()),
        ),
        (
            Role::Operator,
            api.token("o", Role::Operator, Scopes::default()),
        ),
        (Role::Admin, api.token("a", Role::Admin, Scopes::default())),
    ];
    let mut refusals = 0;
    for rule in ROUTES {
        let path = concrete(rule.path);
        // No credential, and a forged one: 401 with the error body.
        for token in [
            None,
            Some("kanade_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ] {
            let (status, body) = api.call(rule.method, &path, token, None).await;
            assert_eq!(status, 401, "{} {path} with {token:?}: {body}", rule.method);
            assert!(
                body["error"].is_string() && body.get("details").is_some(),
                "{body}"
            );
            refusals += 1;
        }
        for (role, token) in &tokens {
            let (status, body) = api.call(rule.method, &path, Some(token), None).await;
            if *role >= rule.role {
                assert!(
                    status != 401 && status != 403,
                    "{role} may call {} {path}: {status} {body}",
                    rule.method
                );
            } else {
                assert_eq!(status, 403, "{role} on {} {path}: {body}", rule.method);
                let error = body["error"].as_str().unwrap();
                assert!(
                    error.contains(&format!("needs the {} role", rule.role)),
                    "{error}"
                );
                refusals += 1;
            }
        }
    }
    // /healthz stays open.
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    let audit = api.audit();
    let refused = audit
        .iter()
        .filter(|e| matches!(e.outcome.as_deref(), Some("unauthenticated" | "denied")))
        .count();
    assert_eq!(refused, refusals, "every 401 and 403 has its audit entry");
    let anonymous = audit.iter().find(|e| e.actor == "anonymous").unwrap();
    assert_eq!(
        anonymous.source.as_ref().unwrap().ip.as_deref(),
        Some("127.0.0.1")
    );
    assert!(anonymous
        .params_sha256
        .as_deref()
        .is_some_and(|h| h.len() == 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_narrow_exec_kill_revoke_and_pin() {
    let api = Api::start(ApiAuth::default()).await;
    let canary = api.token("canary-op", Role::Operator, scoped(&["canary"], &[]));
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs/hello/exec",
            Some(&canary),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("target all"),
        "{body}"
    );
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs/hello/exec",
            Some(&canary),
            Some(json!({"groups": ["canary"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for target in [
        json!({"groups": ["canary", "prod"]}),
        json!({"pcs": ["pc-1"]}),
    ] {
        let (status, body) = api
            .call("POST", "/api/jobs/hello/exec", Some(&canary), Some(target))
            .await;
        assert_eq!(status, 403, "{body}");
    }

    // Job scope: by id and by tag; an unknown job is refused the same way.
    let hello_only = api.token("hello-op", Role::Operator, scoped(&[], &["hello"]));
    let by_tag = api.token(
        "safe-op",
        Role::Operator,
        Scopes {
            tags: vec!["safe".into()],
            ..Scopes::default()
        },
    );
    for token in [&hello_only, &by_tag] {
        let (status, _) = api
            .call(
                "POST",
                "/api/jobs/hello/exec",
                Some(token),
                Some(json!({"all": true})),
            )
            .await;
        assert_eq!(status, 200);
        for (method, path, body) in [
            ("POST", "/api/jobs/other/exec", json!({"all": true})),
            ("POST", "/api/jobs/other/revoke", json!({})),
            ("POST", "/api/jobs/other/pin", json!({"version": "1.0.0"})),
        ] {
            let (status, body) = api.call(method, path, Some(token), Some(body)).await;
            assert_eq!(status, 403, "{path}: {body}");
        }
        let (_, unknown) = api
            .call("POST", "/api/jobs/nope/revoke", Some(token), None)
            .await;
        let (_, other) = api
            .call("POST", "/api/jobs/other/revoke", Some(token), None)
            .await;
        assert_eq!(
            unknown["error"].as_str().unwrap().replace("nope", "X"),
            other["error"].as_str().unwrap().replace("other", "X"),
            "an unknown job and one out of scope read alike"
        );
    }
    // Kill follows the execution's job.
    let other_exec = api.backend.exec("other", &Default::default()).await;
    assert!(other_exec.is_err(), "an empty target is refused");
    let row = api
        .backend
        .exec(
            "other",
            &kanade::backend::manifest::Target {
                all: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{}/kill", row.exec_id),
            Some(&hello_only),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_and_revocation_take_effect_at_once() {
    let api = Api::start(ApiAuth::default()).await;
    let admin = api.token("admin", Role::Admin, Scopes::default());
    let (status, created) = api
        .call(
            "POST",
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "short", "role": "viewer",
                        "expires_at": (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let short = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("GET", "/api/jobs", Some(&short), None).await.0,
        200
    );
    // The backend's clock passes the expiry: refused on the very next call.
    api.clock.store(61, Ordering::SeqCst);
    let (status, body) = api.call("GET", "/api/jobs", Some(&short), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("the token has expired"))
    );
    api.clock.store(0, Ordering::SeqCst);

    let (_, created) = api
        .call(
            "POST",
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "soon-gone", "role": "operator"})),
        )
        .await;
    let gone = created["token"].as_str().unwrap().to_owned();
    assert_eq!(api.call("GET", "/api/jobs", Some(&gone), None).await.0, 200);
    let (status, _) = api
        .call("DELETE", "/api/tokens/soon-gone", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.call("GET", "/api/jobs", Some(&gone), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("the token has been revoked"))
    );
    // The listing never shows a secret.
    let (_, listed) = api.call("GET", "/api/tokens", Some(&admin), None).await;
    assert!(!listed.to_string().contains(&gone[20..]), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_checked_against_the_issuer_keys() {
    let key = TestKey::generate("k1");
    let stranger = TestKey::generate("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let config = OidcConfig::new(
        "https://idp.example",
        "kanade",
        JwksSource::File(&jwks_path),
        [("ops".to_owned(), Role::Operator)].into_iter().collect(),
    );
    let jwks = std::fs::read_to_string(&jwks_path).unwrap();
    let verifier = OidcVerifier::new(config, &jwks).unwrap();
    let api = Api::start(ApiAuth {
        oidc: Some(Arc::new(verifier)),
        insecure_no_auth: false,
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, exp: i64| json!({"iss": "https://idp.example", "aud": aud, "sub": "alice", "role": "ops", "exp": exp, "iat": now});
    let good = key.sign(claims("kanade", now + 300));
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs/hello/exec",
            Some(&good),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (what, token) in [
        ("wrong audience", key.sign(claims("another-app", now + 300))),
        ("expired", key.sign(claims("kanade", now - 3600))),
        (
            "signed by another key",
            stranger.sign(claims("kanade", now + 300)),
        ),
    ] {
        let (status, body) = api.call("GET", "/api/jobs", Some(&token), None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            !body.to_string().contains(&token),
            "the token is not echoed"
        );
    }
    assert!(api
        .audit()
        .iter()
        .any(|e| e.actor == "oidc:alice" && e.action == "job.exec"));
}
