//! Signature rules, case by case (the property tests and vectors are in
//! `signature.rs`).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kanade_core::policy::signature::*;
use kanade_core::transport::Headers;

const NOW: i64 = 1_700_000_000_000;

fn headers(pairs: Vec<(String, String)>) -> Headers {
    pairs.into_iter().collect()
}

fn setup(max_age: Option<u64>) -> (CommandSigner, KeyRing) {
    let signer = CommandSigner::from_seed("k1", [7u8; 32]);
    let ring = KeyRing::from_entries(vec![signer.ring_entry(None, max_age)]).expect("valid ring");
    (signer, ring)
}

#[test]
fn signs_and_verifies() {
    let (signer, ring) = setup(Some(60));
    let h = headers(signer.sign(b"{\"x\":1}", NOW));
    assert_eq!(verify(&ring, &h, b"{\"x\":1}", NOW), Ok("k1".to_string()));
}

#[test]
fn signed_bytes_prefix_big_endian() {
    assert_eq!(
        signed_bytes(1, b"ab"),
        vec![0, 0, 0, 0, 0, 0, 0, 1, b'a', b'b']
    );
    assert_eq!(&signed_bytes(-1, b"")[..], &[0xff; 8]);
}

#[test]
fn absent_before_anything_else() {
    let (_, ring) = setup(None);
    let h = headers(vec![(HEADER_ALG.into(), "rsa".into())]);
    assert_eq!(verify(&ring, &h, b"", NOW), Err(SignatureRefusal::Absent));
    assert_eq!(
        SignatureRefusal::Absent.obs_kind(),
        "command_signature_absent"
    );
}

#[test]
fn malformed_before_unknown_key() {
    let (signer, _) = setup(None);
    let empty = KeyRing::default();
    let mut h = headers(signer.sign(b"b", NOW));
    assert!(matches!(
        verify(&empty, &h, b"b", NOW),
        Err(SignatureRefusal::UnknownKey { .. })
    ));
    h.insert(HEADER_ALG.into(), "ED25519".into());
    let err = verify(&empty, &h, b"b", NOW).expect_err("wrong alg");
    assert_eq!(err.obs_kind(), "command_signature_invalid");
}

#[test]
fn at_must_be_canonical() {
    let (signer, ring) = setup(None);
    for bad in ["+1", "01", " 1", "1 ", "1.0", "", "x"] {
        let mut h = headers(signer.sign(b"b", 1));
        h.insert(HEADER_AT.into(), bad.into());
        assert!(
            matches!(
                verify(&ring, &h, b"b", 1),
                Err(SignatureRefusal::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn time_checks_after_signature() {
    let (signer, ring) = setup(Some(10));
    // A forged signature dated in the future is Invalid, not ClockAhead.
    let mut h = headers(signer.sign(b"b", NOW + 10 * MAX_CLOCK_AHEAD_MS));
    h.insert(HEADER_SIG.into(), STANDARD.encode([0u8; 64]));
    assert!(matches!(
        verify(&ring, &h, b"b", NOW),
        Err(SignatureRefusal::Invalid { .. })
    ));
    let h = headers(signer.sign(b"b", NOW - 10_001));
    assert_eq!(
        verify(&ring, &h, b"b", NOW),
        Err(SignatureRefusal::Stale {
            age_secs: 11,
            max_age_secs: 10
        })
    );
    let h = headers(signer.sign(b"b", NOW + MAX_CLOCK_AHEAD_MS + 1));
    assert_eq!(
        verify(&ring, &h, b"b", NOW),
        Err(SignatureRefusal::ClockAhead { ahead_secs: 301 })
    );
}

#[test]
fn extreme_times_do_not_overflow() {
    let (signer, ring) = setup(Some(u64::MAX));
    let h = headers(signer.sign(b"b", i64::MIN));
    assert!(verify(&ring, &h, b"b", i64::MAX).is_ok());
    let h = headers(signer.sign(b"b", i64::MAX));
    assert!(matches!(
        verify(&ring, &h, b"b", i64::MIN),
        Err(SignatureRefusal::ClockAhead { .. })
    ));
}

#[test]
fn debug_hides_secret() {
    let signer = CommandSigner::from_seed("k1", [7u8; 32]);
    let secret = STANDARD.encode([7u8; 32]);
    let text = format!("{signer:?}");
    assert!(!text.contains(&secret), "{text}");
    assert!(!text.contains("[7, 7"), "{text}");
    assert!(text.contains("k1"));
}

#[test]
fn key_file_round_trip() {
    let signer = CommandSigner::generate("gen").expect("random");
    let back = CommandSigner::from_file_text(&signer.to_file_text()).expect("parses");
    assert_eq!(back.kid(), "gen");
    assert_eq!(back.ring_entry(None, None), signer.ring_entry(None, None));
    assert!(CommandSigner::generate("").is_err());
}

#[test]
fn fingerprints_format() {
    let (signer, ring) = setup(None);
    let fps = ring.fingerprints();
    assert_eq!(fps.len(), 1);
    let (kid, hex) = fps[0].split_once(':').expect("colon");
    assert_eq!(kid, "k1");
    assert_eq!(hex.len(), 16);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(fps[0], signer.fingerprint());
}
