//! The harness the `security_*` tests share: a backend on a memory
//! transport with a clock the test moves, served by the real router on a
//! loopback port ([`Api`]), plus helpers for tokens, scopes, route paths
//! and signed OIDC test JWTs ([`TestKey`]). Not every test file uses every
//! item, hence the `dead_code` allowance.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use kanade::backend::auth::{Role, Scopes};
use kanade::backend::db::NewToken;
use kanade::backend::http::ApiAuth;
use kanade::backend::{http, Backend, BackendSettings};
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::Transport;
use serde_json::{json, Value};

pub const JOB: &str = "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\ntags: [safe]\n";
pub const OTHER_JOB: &str =
    "id: other\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo other\n  timeout: 30s\n";

/// A backend on a memory transport with a clock the test moves, served on
/// a loopback port.
pub struct Api {
    pub base: String,
    pub backend: Backend,
    pub transport: Arc<dyn Transport>,
    pub db_path: PathBuf,
    pub clock: Arc<AtomicI64>,
    _dir: Option<tempfile::TempDir>,
}

pub fn clock_fn(offset: Arc<AtomicI64>) -> kanade::backend::NowFn {
    Arc::new(move || chrono::Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)))
}

pub async fn start_on(
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
    pub async fn start(auth: ApiAuth) -> Api {
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
    pub async fn restart(&mut self) {
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

    pub fn token(&self, name: &str, role: Role, scopes: Scopes) -> String {
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

    pub async fn call(
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

    pub fn audit(&self) -> Vec<kanade::core::wire::AuditEvent> {
        self.backend
            .db()
            .audit_events(None, None, usize::MAX)
            .unwrap()
    }
}

pub fn scoped(groups: &[&str], jobs: &[&str]) -> Scopes {
    Scopes {
        groups: groups.iter().map(|s| s.to_string()).collect(),
        jobs: jobs.iter().map(|s| s.to_string()).collect(),
        ..Scopes::default()
    }
}

/// Fills a route's `{…}` parameter.
pub fn concrete(path: &str) -> String {
    path.replace("{id}", "hello").replace("{name}", "nobody")
}

/// An Ed25519 key for signing test JWTs, and its public JWK.
pub struct TestKey {
    pub encoding: jsonwebtoken::EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
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

    pub fn sign(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}
