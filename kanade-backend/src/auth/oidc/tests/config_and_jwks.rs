//! Unit tests of `looks_like_jwt`, the `[oidc]` config checks and JWKS
//! parsing (unusable or mismatched keys).

use super::*;

#[test]
fn oidc_looks_like_jwt_tells_jwts_from_api_tokens() {
    let (key, _) = setup();
    assert!(looks_like_jwt(&key.sign(Some("k1"), &claims())));
    assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.e30."));
    assert!(!looks_like_jwt("kanade_0123abcd_c2VjcmV0LXNlY3JldA"));
    assert!(!looks_like_jwt("a.b"));
    assert!(!looks_like_jwt("a.b.c.d"));
    assert!(!looks_like_jwt(".b.c"));
    assert!(!looks_like_jwt("a+b.c/d.e=="));
    assert!(!looks_like_jwt(""));
}

#[test]
fn oidc_config_defaults_and_checks() {
    let parsed: OidcConfig = serde_json::from_value(json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "https://login.example.com/certs",
        "role_map": { "kanade-admins": "admin" },
    }))
    .unwrap();
    assert_eq!(parsed.role_claim, "role");
    assert_eq!(parsed.subject_claim, "sub");
    assert_eq!(parsed.leeway_secs, 30);
    assert_eq!(parsed.algorithms, vec!["RS256", "ES256", "EdDSA"]);
    assert_eq!(parsed.scopes_claim, None);
    assert_eq!(
        parsed.jwks_source().unwrap(),
        JwksSource::Url("https://login.example.com/certs")
    );
    parsed.validate().unwrap();
    let round: OidcConfig = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(round, parsed);

    let bad_role = serde_json::from_value::<OidcConfig>(json!({
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/x", "role_map": { "g": "root" },
    }));
    assert!(bad_role.is_err());
    let typo = serde_json::from_value::<OidcConfig>(json!({
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/x", "role_map": {}, "audiance": "x",
    }));
    assert!(typo.is_err());

    let mut both = parsed.clone();
    both.jwks_file = Some(PathBuf::from("/etc/jwks.json"));
    assert!(matches!(both.validate(), Err(OidcError::Config(_))));
    let mut neither = parsed.clone();
    neither.jwks_url = None;
    assert!(matches!(neither.validate(), Err(OidcError::Config(_))));
    let mut plain = parsed.clone();
    plain.jwks_url = Some("http://login.example.com/certs".to_owned());
    assert!(matches!(plain.validate(), Err(OidcError::Config(_))));
    plain.jwks_url = Some("http://127.0.0.1:8080/certs".to_owned());
    plain.validate().unwrap();
    plain.jwks_url = Some("http://localhost.evil.com/certs".to_owned());
    assert!(plain.validate().is_err());
    let mut empty_map = parsed.clone();
    empty_map.role_map.clear();
    assert!(matches!(empty_map.validate(), Err(OidcError::Config(_))));
    let mut no_alg = parsed;
    no_alg.algorithms = vec!["none".to_owned()];
    assert!(matches!(no_alg.validate(), Err(OidcError::Config(_))));
}

#[test]
fn oidc_jwks_problems_are_reported_not_panicked_on() {
    let cfg = config;
    assert!(matches!(
        OidcVerifier::new(cfg(), "not json"),
        Err(OidcError::Jwks(_))
    ));
    assert!(matches!(
        OidcVerifier::new(cfg(), "{}"),
        Err(OidcError::Jwks(_))
    ));
    assert!(matches!(
        OidcVerifier::new(cfg(), r#"{"keys":[]}"#),
        Err(OidcError::Jwks(_))
    ));
    // A short Ed25519 key, an oct key, an encryption key, a small RSA key.
    let bad = json!({ "keys": [
        { "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short" },
        { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
        { "kty": "RSA", "use": "enc", "n": URL_SAFE_NO_PAD.encode([1u8; 256]), "e": "AQAB" },
        { "kty": "RSA", "n": URL_SAFE_NO_PAD.encode([1u8; 128]), "e": "AQAB" },
        { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" },
    ]});
    let err = OidcVerifier::new(cfg(), &bad.to_string()).unwrap_err();
    assert!(err.to_string().contains("oct"), "{err}");
    // Unusable keys are skipped next to a good one.
    let key = TestKey::generate(Some("k1"));
    let mut mixed = bad;
    mixed["keys"].as_array_mut().unwrap().push(key.jwk.clone());
    let verifier = OidcVerifier::new(cfg(), &mixed.to_string()).unwrap();
    assert_eq!(verifier.key_count(), 1);
    assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
}

#[test]
fn oidc_key_pinned_to_another_alg_or_type_is_refused() {
    let key = TestKey::generate(Some("k1"));
    let mut jwk = key.jwk.clone();
    jwk["alg"] = json!("RS256");
    let set = json!({ "keys": [jwk] }).to_string();
    // An OKP key pinned to RS256 is unusable.
    assert!(matches!(
        OidcVerifier::new(config(), &set),
        Err(OidcError::Jwks(_))
    ));

    // An RSA-looking kid used with EdDSA: the kid's key is the wrong type.
    let rsa = json!({ "kty": "RSA", "kid": "rsa", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB" });
    let set = json!({ "keys": [rsa, key.jwk.clone()] }).to_string();
    let verifier = OidcVerifier::new(config(), &set).unwrap();
    assert_eq!(
        verifier
            .verify(&key.sign(Some("rsa"), &claims()))
            .unwrap_err(),
        OidcError::KeyAlgorithmMismatch {
            alg: "EdDSA".to_owned()
        }
    );
    assert!(verifier.verify(&key.sign(Some("k1"), &claims())).is_ok());
}
