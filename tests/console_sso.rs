//! The console's single sign-on in a real browser: headless Chromium, the
//! real `kanade-backend` with an OIDC config whose `[console]` table names
//! a stand-in identity provider served by this test (authorization and
//! token endpoints; it checks the PKCE verifier against the challenge,
//! and signs an ID token with a key the backend's JWKS file holds).
//!
//! Checks: the page's policy lets it reach the token endpoint's origin and
//! nothing else; a return to a tab that started no sign-in is refused
//! without showing its text; a return with another `state` is refused; an
//! issuer's `error` shows only its standard code; none of these asks the
//! token endpoint; an ID token with another `nonce` is not kept; the
//! button goes to the issuer and back signed in as the token's subject
//! with the role its claim maps to (the issuer having checked the PKCE
//! verifier), the code gone from the address bar.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use fantoccini::Locator;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod browser_common;
mod common;
mod security_common;
use browser_common::{click, start_browser, text_of};
use common::{free_port, spawn_quiet, wait_until, workspace_binary};
use security_common::TestKey;

/// What the stand-in issuer remembers of each code it handed out.
struct Pending {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    client_id: String,
}

#[derive(Clone)]
struct Issuer {
    url: String,
    key: Arc<TestKey>,
    codes: Arc<Mutex<HashMap<String, Pending>>>,
    token_calls: Arc<Mutex<usize>>,
    /// Sign the next ID token with another nonce than the one asked for.
    wrong_nonce: Arc<std::sync::atomic::AtomicBool>,
}

async fn authorize(
    State(issuer): State<Issuer>,
    Query(ask): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| ask.get(name).cloned().unwrap_or_default();
    if field("response_type") != "code"
        || field("code_challenge_method") != "S256"
        || !field("scope").split(' ').any(|s| s == "openid")
    {
        return (
            StatusCode::BAD_REQUEST,
            "not an authorization code request with PKCE",
        )
            .into_response();
    }
    let code = format!("code-{}", issuer.codes.lock().unwrap().len() + 1);
    issuer.codes.lock().unwrap().insert(
        code.clone(),
        Pending {
            challenge: field("code_challenge"),
            nonce: field("nonce"),
            redirect_uri: field("redirect_uri"),
            client_id: field("client_id"),
        },
    );
    let back = format!(
        "{}?code={code}&state={}",
        field("redirect_uri"),
        percent(&field("state"))
    );
    Redirect::to(&back).into_response()
}

/// Percent-encodes what is not unreserved (RFC 3986).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded`.
fn form(body: &str) -> HashMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn token(State(issuer): State<Issuer>, body: String) -> Response {
    *issuer.token_calls.lock().unwrap() += 1;
    let asked = form(&body);
    let field = |name: &str| asked.get(name).cloned().unwrap_or_default();
    let cors = || [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            cors(),
            axum::Json(json!({"error": why})),
        )
            .into_response()
    };
    let Some(pending) = issuer.codes.lock().unwrap().remove(&field("code")) else {
        return refuse("invalid_grant");
    };
    let digest = Sha256::digest(field("code_verifier").as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    if field("grant_type") != "authorization_code"
        || challenge != pending.challenge
        || field("redirect_uri") != pending.redirect_uri
        || field("client_id") != pending.client_id
    {
        return refuse("invalid_grant");
    }
    let now = jsonwebtoken::get_current_timestamp();
    let id_token = issuer.key.sign(json!({
        "iss": issuer.url,
        "aud": "kanade",
        "sub": "olga",
        "role": "kanade-operators",
        "nonce": if issuer.wrong_nonce.swap(false, std::sync::atomic::Ordering::SeqCst) {
            "another-sign-in".to_owned()
        } else {
            pending.nonce
        },
        "iat": now,
        "exp": now + 600,
    }));
    (
        StatusCode::OK,
        cors(),
        axum::Json(json!({"id_token": id_token, "token_type": "Bearer"})),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_through_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = Issuer {
        url: issuer_url.clone(),
        key: Arc::new(TestKey::generate("idp-1")),
        codes: Arc::default(),
        token_calls: Arc::default(),
        wrong_nonce: Arc::default(),
    };
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [issuer.key.jwk.clone()]}).to_string()).unwrap();
    let app = axum::Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(issuer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = dir.path().join("oidc.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"{issuer_url}\"\naudience = \"kanade\"\njwks_file = \"{}\"\n\
             [role_map]\nkanade-operators = \"operator\"\n\
             [console]\nauthorization_endpoint = \"{issuer_url}/authorize\"\n\
             token_endpoint = \"{issuer_url}/token\"\nlabel = \"Sign in with Test IdP\"\n",
            jwks.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let _backend = spawn_quiet(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--listen", &listen, "--oidc-config"])
            .arg(&config)
            .arg("--db")
            .arg(dir.path().join("backend.db")),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    wait_until("the backend", || {
        agent
            .get(format!("{base}/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    // The page may reach the token endpoint's origin, and nothing else.
    let page = agent.get(format!("{base}/")).call().unwrap();
    let policy = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains(&format!("connect-src 'self' {issuer_url};")),
        "{policy}"
    );
    let offer: Value = agent
        .get(format!("{base}/console/sign-in.json"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(offer["oidc"]["client_id"], "kanade");

    let (_driver, browser) = start_browser().await;

    // A return to a tab that started no sign-in is refused, its text not
    // shown, and the token endpoint never asked.
    browser
        .goto(&format!("{base}/?error=Call%20evil.example%20now&state=x"))
        .await
        .unwrap();
    let said = text_of(&browser, "#sign-in-error", |t| {
        t.contains("not started from this tab")
    })
    .await;
    assert!(!said.contains("evil"), "{said}");
    assert!(!browser.current_url().await.unwrap().as_str().contains('?'));
    // A sign-in this tab started, answered with another state: refused.
    let started = r#"sessionStorage.setItem('kanade.sso', JSON.stringify({verifier: 'v', state: 'mine', nonce: 'n', back: '#/fleet'}))"#;
    browser.execute(started, vec![]).await.unwrap();
    browser
        .goto(&format!("{base}/?code=code-forged&state=forged"))
        .await
        .unwrap();
    text_of(&browser, "#sign-in-error", |t| {
        t.contains("not started from this tab")
    })
    .await;
    // The same sign-in refused by the issuer: its standard code, nothing else.
    browser.execute(started, vec![]).await.unwrap();
    browser
        .goto(&format!("{base}/?error=access_denied&state=mine"))
        .await
        .unwrap();
    text_of(&browser, "#sign-in-error", |t| {
        t.contains("did not sign you in (access_denied)")
    })
    .await;
    assert_eq!(*issuer.token_calls.lock().unwrap(), 0);

    // An ID token minted for another sign-in (its nonce differs) is not
    // used.
    issuer
        .wrong_nonce
        .store(true, std::sync::atomic::Ordering::SeqCst);
    click(&browser, "#sso-button").await;
    text_of(&browser, "#sign-in-error", |t| t.contains("nonce differs")).await;
    assert_eq!(*issuer.token_calls.lock().unwrap(), 1);
    let kept = browser
        .execute("return sessionStorage.getItem('kanade.token')", vec![])
        .await
        .unwrap();
    assert_eq!(kept, Value::Null, "a token of another sign-in was kept");

    // The button goes to the issuer and back, signed in (the issuer checked
    // the PKCE verifier against the challenge, and the nonce matched).
    let button = text_of(&browser, "#sso-button", |t| !t.is_empty()).await;
    assert_eq!(button, "Sign in with Test IdP");
    click(&browser, "#sso-button").await;
    text_of(&browser, "#whoami", |t| t == "oidc:olga · operator").await;
    let url = browser.current_url().await.unwrap();
    assert!(!url.as_str().contains("code="), "{url}");
    assert_eq!(url.fragment(), Some("/fleet"));
    assert_eq!(*issuer.token_calls.lock().unwrap(), 2);
    // The operator's pages and controls are there.
    text_of(&browser, "#nav-run", |t| t == "Run").await;
    browser
        .find(Locator::Css("#nav-audit"))
        .await
        .expect_err("an operator has no audit page");

    browser.close().await.unwrap();
}
