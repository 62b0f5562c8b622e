//! Unit tests of OIDC token verification: claims, time, issuer and
//! audience, keys and algorithms, malformed tokens. The config and JWKS
//! checks are in `tests/config_and_jwks.rs`; both share the key and token
//! helpers here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::auth::principal::{CredentialKind, Role};

const ISSUER: &str = "https://login.example.com/realms/ops";
const AUDIENCE: &str = "kanade";

/// An Ed25519 key pair: the PKCS#8 v1 DER of a random seed (a fixed
/// 16-byte prefix + the 32-byte seed) and its public JWK.
struct TestKey {
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn generate(kid: Option<&str>) -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let encoding = EncodingKey::from_ed_der(&der);
        let public =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
        let mut jwk = serde_json::to_value(&public).unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk["use"] = json!("sig");
        TestKey { encoding, jwk }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn config() -> OidcConfig {
    let mut config = OidcConfig::new(
        ISSUER,
        AUDIENCE,
        JwksSource::File(Path::new("/etc/kanade/jwks.json")),
        BTreeMap::from([
            ("kanade-viewers".to_owned(), Role::Viewer),
            ("kanade-operators".to_owned(), Role::Operator),
            ("kanade-admins".to_owned(), Role::Admin),
        ]),
    );
    config.scopes_claim = Some("kanade_scopes".to_owned());
    config
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now(),
        "exp": now() + 300,
        "role": "kanade-operators",
        "kanade_scopes": { "groups": ["canary"], "tags": ["safe"] },
    })
}

fn setup() -> (TestKey, OidcVerifier) {
    let key = TestKey::generate(Some("k1"));
    let verifier = OidcVerifier::new(config(), &jwks(&[&key])).unwrap();
    (key, verifier)
}

/// A token with a hand-made header and payload and an arbitrary
/// signature segment.
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn oidc_valid_token_maps_role_and_scopes() {
    let (key, verifier) = setup();
    let principal = verifier.verify(&key.sign(Some("k1"), &claims())).unwrap();
    assert_eq!(principal.name, "oidc:alice");
    assert_eq!(principal.role, Role::Operator);
    assert_eq!(principal.kind, CredentialKind::Oidc);
    assert_eq!(principal.scopes.groups, vec!["canary".to_owned()]);
    assert_eq!(principal.scopes.tags, vec!["safe".to_owned()]);
    assert!(principal.scopes.jobs.is_empty() && principal.scopes.pcs.is_empty());
}

#[test]
fn oidc_audience_list_containing_ours_is_accepted() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["aud"] = json!(["account", AUDIENCE]);
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
        Role::Operator
    );
}

#[test]
fn oidc_missing_scopes_claim_means_unrestricted() {
    let (key, verifier) = setup();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("kanade_scopes");
    assert!(verifier
        .verify(&key.sign(Some("k1"), &c))
        .unwrap()
        .scopes
        .is_unrestricted());
    c["kanade_scopes"] = json!("groups=canary");
    assert!(matches!(
        verifier.verify(&key.sign(Some("k1"), &c)),
        Err(OidcError::InvalidClaim { .. })
    ));
}

#[test]
fn oidc_wrong_audience_is_refused() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["aud"] = json!("someone-else");
    let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
    assert_eq!(
        err,
        OidcError::WrongAudience {
            expected: AUDIENCE.to_owned()
        }
    );
    assert!(err.to_string().contains("audience"), "{err}");
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
        OidcError::MissingClaim("aud".to_owned())
    );
}

#[test]
fn oidc_wrong_issuer_is_refused() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
    assert_eq!(
        err,
        OidcError::WrongIssuer {
            expected: ISSUER.to_owned()
        }
    );
    assert!(!err.to_string().contains("evil"), "{err}");
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
        OidcError::MissingClaim("iss".to_owned())
    );
}

#[test]
fn oidc_expired_beyond_leeway_is_refused() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
    assert_eq!(err, OidcError::Expired { leeway_secs: 30 });
    assert!(err.to_string().contains("expired"), "{err}");
    // Within the leeway: accepted.
    c["exp"] = json!(now() - 5);
    assert!(verifier.verify(&key.sign(Some("k1"), &c)).is_ok());
    // No exp at all: refused.
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
        OidcError::MissingClaim("exp".to_owned())
    );
}

#[test]
fn oidc_not_yet_valid_is_refused() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
        OidcError::NotYetValid
    );
    c["nbf"] = json!(now() + 5);
    assert!(verifier.verify(&key.sign(Some("k1"), &c)).is_ok());
}

#[test]
fn oidc_token_signed_by_another_key_is_refused() {
    let (_, verifier) = setup();
    let other = TestKey::generate(Some("k1"));
    let err = verifier
        .verify(&other.sign(Some("k1"), &claims()))
        .unwrap_err();
    assert_eq!(err, OidcError::BadSignature);
    // A tampered payload under a genuine signature, too.
    let (key, verifier) = setup();
    let token = key.sign(Some("k1"), &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["role"] = json!("kanade-admins");
    let payload = URL_SAFE_NO_PAD.encode(c.to_string());
    parts[1] = &payload;
    assert_eq!(
        verifier.verify(&parts.join(".")).unwrap_err(),
        OidcError::BadSignature
    );
}

#[test]
fn oidc_unknown_kid_is_refused() {
    let (key, verifier) = setup();
    let err = verifier
        .verify(&key.sign(Some("k2"), &claims()))
        .unwrap_err();
    assert_eq!(
        err,
        OidcError::UnknownKey {
            kid: Some("\"k2\"".to_owned())
        }
    );
    assert!(err.to_string().contains("rotated"), "{err}");
}

#[test]
fn oidc_kid_selects_among_several_keys() {
    let k1 = TestKey::generate(Some("k1"));
    let k2 = TestKey::generate(Some("k2"));
    let verifier = OidcVerifier::new(config(), &jwks(&[&k1, &k2])).unwrap();
    assert_eq!(verifier.key_count(), 2);
    assert!(verifier.verify(&k1.sign(Some("k1"), &claims())).is_ok());
    assert!(verifier.verify(&k2.sign(Some("k2"), &claims())).is_ok());
    // k2's token claiming to be k1's: bad signature.
    assert_eq!(
        verifier
            .verify(&k2.sign(Some("k1"), &claims()))
            .unwrap_err(),
        OidcError::BadSignature
    );
    // No kid with several keys: ambiguous.
    assert_eq!(
        verifier.verify(&k1.sign(None, &claims())).unwrap_err(),
        OidcError::UnknownKey { kid: None }
    );
}

#[test]
fn oidc_no_kid_with_a_single_key_uses_it() {
    let key = TestKey::generate(None);
    let verifier = OidcVerifier::new(config(), &jwks(&[&key])).unwrap();
    assert!(verifier.verify(&key.sign(None, &claims())).is_ok());
    let (key, verifier) = setup();
    assert!(verifier.verify(&key.sign(None, &claims())).is_ok());
}

#[test]
fn oidc_unmapped_role_is_refused() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["role"] = json!("kanade-superusers");
    let err = verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err();
    assert_eq!(
        err,
        OidcError::NoRole {
            claim: "role".to_owned()
        }
    );
    assert!(!err.to_string().contains("superusers"), "{err}");
    c["role"] = json!(["offline_access", "uma_authorization"]);
    assert!(matches!(
        verifier.verify(&key.sign(Some("k1"), &c)),
        Err(OidcError::NoRole { .. })
    ));
    c.as_object_mut().unwrap().remove("role");
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap_err(),
        OidcError::MissingClaim("role".to_owned())
    );
    c["role"] = json!(3);
    assert!(matches!(
        verifier.verify(&key.sign(Some("k1"), &c)),
        Err(OidcError::InvalidClaim { .. })
    ));
}

#[test]
fn oidc_array_role_claim_picks_the_highest_role() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["role"] = json!([
        "kanade-viewers",
        "offline_access",
        "kanade-admins",
        "kanade-operators"
    ]);
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
        Role::Admin
    );
}

#[test]
fn oidc_dotted_role_claim_reads_nested_objects() {
    let key = TestKey::generate(Some("k1"));
    let mut config = config();
    config.role_claim = "realm_access.roles".to_owned();
    config.subject_claim = "preferred_username".to_owned();
    let verifier = OidcVerifier::new(config, &jwks(&[&key])).unwrap();
    let mut c = claims();
    c["realm_access"] = json!({ "roles": ["kanade-viewers"] });
    c["preferred_username"] = json!("bob");
    let principal = verifier.verify(&key.sign(Some("k1"), &c)).unwrap();
    assert_eq!(
        (principal.name.as_str(), principal.role),
        ("oidc:bob", Role::Viewer)
    );

    // A namespaced top-level claim with dots in its name wins over the path.
    let mut config = self::config();
    config.role_claim = "https://kanade.example.com/roles".to_owned();
    let verifier = OidcVerifier::new(config, &jwks(&[&key])).unwrap();
    let mut c = claims();
    c["https://kanade.example.com/roles"] = json!(["kanade-admins"]);
    assert_eq!(
        verifier.verify(&key.sign(Some("k1"), &c)).unwrap().role,
        Role::Admin
    );
}

#[test]
fn oidc_alg_none_and_hs256_are_refused() {
    let (key, verifier) = setup();
    let none = forged(&json!({ "alg": "none", "typ": "JWT" }), &claims(), b"");
    let err = verifier.verify(&none).unwrap_err();
    assert!(
        matches!(
            err,
            OidcError::Malformed | OidcError::AlgorithmNotAllowed { .. }
        ),
        "{err}"
    );
    let none_sig = forged(&json!({ "alg": "none", "kid": "k1" }), &claims(), b"x");
    let err = verifier.verify(&none_sig).unwrap_err();
    assert!(
        matches!(&err, OidcError::AlgorithmNotAllowed { alg, .. } if alg == "none"),
        "{err}"
    );

    // HS256 with the issuer's public key as the HMAC secret (the
    // classic key-confusion forgery).
    let public = URL_SAFE_NO_PAD
        .decode(key.jwk["x"].as_str().unwrap())
        .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    let err = verifier.verify(&hs).unwrap_err();
    assert!(
        matches!(&err, OidcError::AlgorithmNotAllowed { alg, .. } if alg == "HS256"),
        "{err}"
    );

    // And HS256 can't be configured in.
    let mut config = config();
    config.algorithms = vec!["HS256".to_owned()];
    assert!(matches!(
        OidcVerifier::new(config, &jwks(&[&key])),
        Err(OidcError::Config(_))
    ));
}

#[test]
fn oidc_algorithm_not_configured_is_refused() {
    let key = TestKey::generate(Some("k1"));
    let mut config = config();
    config.algorithms = vec!["RS256".to_owned(), "EdDSA".to_owned()];
    let verifier = OidcVerifier::new(config.clone(), &jwks(&[&key])).unwrap();
    assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
    config.algorithms = vec!["RS256".to_owned()];
    // The JWKS has only an Ed25519 key: nothing could verify.
    assert!(matches!(
        OidcVerifier::new(config, &jwks(&[&key])),
        Err(OidcError::Jwks(_))
    ));
}

#[test]
fn oidc_errors_never_echo_the_token() {
    let (key, verifier) = setup();
    let mut c = claims();
    c["sub"] = json!("secret-subject-xyz");
    c["aud"] = json!("secret-audience-xyz");
    let token = key.sign(Some("k1"), &c);
    let err = verifier.verify(&token).unwrap_err().to_string();
    for part in token.split('.') {
        assert!(!err.contains(part), "{err}");
    }
    assert!(!err.contains("xyz"), "{err}");
    let garbage = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4eXoifQ.c2ln-junk";
    let err = verifier.verify(garbage).unwrap_err().to_string();
    assert!(!err.contains("xyz") && !err.contains("junk"), "{err}");
}

#[test]
fn oidc_malformed_tokens_are_refused() {
    let (_, verifier) = setup();
    for token in [
        "",
        "kanade_abc_def",
        "a.b",
        "a.b.c.d",
        "!!.??.##",
        "e30.e30.",
        "bm90anNvbg.e30.c2ln",
    ] {
        assert!(
            matches!(verifier.verify(token), Err(OidcError::Malformed)),
            "{token:?}"
        );
    }
    let huge = format!("{}.e30.e30", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(verifier.verify(&huge).unwrap_err(), OidcError::Malformed);
}

mod config_and_jwks;
