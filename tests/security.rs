//! Who may do what, through the real router on a real listener: the route
//! × role table, scopes, token expiry and revocation, OIDC, M-of-N
//! approvals (across a backend restart), and the audit trail (every
//! refusal recorded; verify fails, naming the entry, after an edit, a
//! deletion or a swap in the database).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kanade::backend::auth::oidc::{JwksSource, OidcConfig, OidcVerifier};
use kanade::backend::auth::{Role, Scopes};
use kanade::backend::db::NewToken;
use kanade::backend::http::{routes::ROUTES, ApiAuth};
use kanade::backend::{http, Backend, BackendSettings};
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::{Subscription, Transport};
use serde_json::{json, Value};

const JOB: &str = "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\ntags: [safe]\n";
const OTHER_JOB: &str =
    "id: other\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo other\n  timeout: 30s\n";

/// A backend on a memory transport with a clock the test moves, served on
/// a loopback port.
struct Api {
    base: String,
    backend: Backend,
    transport: Arc<dyn Transport>,
    db_path: PathBuf,
    clock: Arc<AtomicI64>,
    _dir: Option<tempfile::TempDir>,
}

fn clock_fn(offset: Arc<AtomicI64>) -> kanade::backend::NowFn {
    Arc::new(move || chrono::Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)))
}

async fn start_on(
    transport: Arc<dyn Transport>,
    db_path: &Path,
    clock: Arc<AtomicI64>,
    auth: ApiAuth,
) -> (String, Backend) {
    let backend = Backend::open(transport, BackendSettings::new(db_path))
        .await
        .unwrap()
        .with_clock(clock_fn(clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = http::router_with(backend.clone(), auth);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{address}"), backend)
}

impl Api {
    async fn start(auth: ApiAuth) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("backend.db");
        let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
        let clock = Arc::new(AtomicI64::new(0));
        let (base, backend) = start_on(transport.clone(), &db_path, clock.clone(), auth).await;
        backend.apply_job(JOB, &Default::default()).await.unwrap();
        backend
            .apply_job(OTHER_JOB, &Default::default())
            .await
            .unwrap();
        Api {
            base,
            backend,
            transport,
            db_path,
            clock,
            _dir: Some(dir),
        }
    }

    /// The same database and transport behind a new backend (a restart).
    async fn restart(&mut self) {
        let (base, backend) = start_on(
            self.transport.clone(),
            &self.db_path,
            self.clock.clone(),
            ApiAuth::default(),
        )
        .await;
        self.base = base;
        self.backend = backend;
    }

    fn token(&self, name: &str, role: Role, scopes: Scopes) -> String {
        let new = NewToken {
            name: name.into(),
            role,
            scopes,
            expires_at: None,
        };
        self.backend
            .db()
            .create_token(&new, "test", chrono::Utc::now())
            .unwrap()
            .1
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let method = method.to_owned();
        let token = token.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let auth = token.map(|t| format!("Bearer {t}"));
            let response = match method.as_str() {
                "GET" => {
                    let mut r = agent.get(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.call()
                }
                "DELETE" => {
                    let mut r = agent.delete(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.call()
                }
                _ => {
                    let mut r = agent.post(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.send_json(body.unwrap_or(json!({})))
                }
            };
            let mut response = response.unwrap();
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
        .await
        .unwrap()
    }

    fn audit(&self) -> Vec<kanade::core::wire::AuditEvent> {
        self.backend
            .db()
            .audit_events(None, None, usize::MAX)
            .unwrap()
    }
}

fn scoped(groups: &[&str], jobs: &[&str]) -> Scopes {
    Scopes {
        groups: groups.iter().map(|s| s.to_string()).collect(),
        jobs: jobs.iter().map(|s| s.to_string()).collect(),
        ..Scopes::default()
    }
}

/// Fills a route's `{…}` parameter.
fn concrete(path: &str) -> String {
    path.replace("{id}", "hello").replace("{name}", "nobody")
}

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

/// An Ed25519 key for signing test JWTs, and its public JWK.
struct TestKey {
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn generate(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        // PKCS#8 v1 prefix of an Ed25519 private key, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(&der);
        let public =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::EdDSA)
                .unwrap();
        let mut jwk = serde_json::to_value(public).unwrap();
        jwk["kid"] = json!(kid);
        TestKey { encoding, jwk }
    }

    fn sign(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
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

async fn commands(transport: &Arc<dyn Transport>) -> Subscription {
    transport.messages().subscribe("commands.>").await.unwrap()
}

async fn quiet(sub: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(400), sub.next())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_need_m_distinct_approvers_and_survive_a_restart() {
    let mut api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(
            "id: careful\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: {approvals: 2, role: operator, ttl: 1h}\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let alice = api.token("alice", Role::Operator, Scopes::default());
    let bob = api.token("bob", Role::Operator, Scopes::default());
    let carol = api.token("carol", Role::Admin, Scopes::default());
    let viewer = api.token("val", Role::Viewer, Scopes::default());
    let mut sent = commands(&api.transport).await;

    let (status, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(
        (status, row["status"].as_str()),
        (202, Some("awaiting_approval")),
        "{row}"
    );
    let exec = row["exec_id"].as_str().unwrap().to_owned();
    let approve = format!("/api/executions/{exec}/approve");
    assert!(quiet(&mut sent).await, "nothing published while awaiting");
    let (_, pending) = api.call("GET", "/api/approvals", Some(&viewer), None).await;
    assert_eq!(pending[0]["execution"]["exec_id"], json!(exec), "{pending}");

    let (status, body) = api.call("POST", &approve, Some(&alice), None).await;
    assert_eq!(status, 403, "the requester cannot approve: {body}");
    let (status, _) = api.call("POST", &approve, Some(&viewer), None).await;
    assert_eq!(status, 403, "a viewer cannot approve");
    let (status, body) = api.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    let (status, _) = api.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(status, 403, "bob counts once");
    assert!(
        quiet(&mut sent).await,
        "one approval of two publishes nothing"
    );

    // The backend restarts between the approvals: the state is in SQLite.
    api.restart().await;
    let (status, body) = api.call("POST", &approve, Some(&carol), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    let command = tokio::time::timeout(Duration::from_secs(5), sent.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(command.subject, "commands.all");
    assert!(
        quiet(&mut sent).await,
        "the quorum publishes exactly one command"
    );
    let (status, _) = api.call("POST", &approve, Some(&alice), None).await;
    assert_eq!(status, 400, "decided requests take no more votes");

    // Denial: nothing is published.
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let denied = row["exec_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{denied}/deny"),
            Some(&bob),
            Some(json!({"reason": "not today"})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/executions/{denied}/approve"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Expiry: past the TTL the request ends `expired`, nothing published.
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let late = row["exec_id"].as_str().unwrap().to_owned();
    api.clock.store(3601, Ordering::SeqCst);
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{late}/approve"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let row = api.backend.db().execution(&late).unwrap().unwrap();
    assert_eq!(row.status, "expired");
    assert!(quiet(&mut sent).await, "denial and expiry publish nothing");
    let steps: Vec<_> = api
        .audit()
        .into_iter()
        .filter(|e| e.action.starts_with("execution.") || e.action == "job.exec")
        .map(|e| (e.actor, e.action, e.outcome.unwrap_or_default()))
        .collect();
    assert!(
        steps.contains(&("carol".into(), "execution.approve".into(), "ok".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("alice".into(), "execution.approve".into(), "denied".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("bob".into(), "execution.deny".into(), "ok".into())),
        "{steps:?}"
    );
}

/// Runs a few audited calls, then returns the API with its trail.
async fn audited_run() -> Api {
    let api = Api::start(ApiAuth::default()).await;
    let admin = api.token("admin", Role::Admin, Scopes::default());
    for n in 0..4 {
        api.call(
            "POST",
            "/api/jobs/hello/exec",
            Some(&admin),
            Some(json!({"all": true})),
        )
        .await;
        api.call("GET", "/api/jobs", Some(&format!("kanade_{n:012}_x")), None)
            .await;
    }
    let (status, verdict) = api
        .call("GET", "/api/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(
        (status, verdict["ok"].as_bool()),
        (200, Some(true)),
        "{verdict}"
    );
    assert!(verdict["entries"].as_u64().unwrap() >= 8, "{verdict}");
    api
}

fn tamper(api: &Api, sql: &str) {
    rusqlite::Connection::open(&api.db_path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_deleted_or_swapped_entry() {
    let edited = audited_run().await;
    tamper(&edited, "UPDATE audit SET actor = 'mallory' WHERE seq = 3;");
    let broken = edited.backend.db().verify_audit().unwrap().unwrap_err();
    assert_eq!(broken.seq, 3, "{broken:?}");

    let deleted = audited_run().await;
    tamper(&deleted, "DELETE FROM audit WHERE seq = 4;");
    let broken = deleted.backend.db().verify_audit().unwrap().unwrap_err();
    assert!(broken.seq == 4 || broken.seq == 5, "{broken:?}");

    let swapped = audited_run().await;
    tamper(
        &swapped,
        "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1;",
    );
    let broken = swapped.backend.db().verify_audit().unwrap().unwrap_err();
    assert_eq!(broken.seq, 2, "{broken:?}");
}
