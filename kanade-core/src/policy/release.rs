//! Agent releases and self-update decisions. Pure: what a release is, how
//! its signature and body are checked, which version an agent should run,
//! and what the boot sentinel does before each start.
//!
//! A release is two objects in the `agent_releases` store (DESIGN §3):
//! the binary at `<platform>/<version>` and its signed description at
//! `<platform>/<version>.release` — a [`SignedRelease`]: the
//! [`ReleaseManifest`] as exact JSON text plus the four `Kanade-Sig*`
//! headers of DESIGN §6, made by the backend's signing key over that text
//! (the same Ed25519 scheme as commands, so an agent checks it with the key
//! ring it already trusts from local config). The agent refuses a release
//! whose signature, version, platform, size or sha256 does not match.
//!
//! Rollout goes through the layered agent config (`target_version`,
//! `target_version_jitter`; global, group, pc — as in the reference). An
//! agent whose running version differs waits a random jitter, installs,
//! and exits for its service manager to start the new binary. The **boot
//! sentinel** ([`boot_verdict`]) runs before every start from the previous
//! (known-good) binary: a new version that has not confirmed a healthy
//! start after [`MAX_FAILED_BOOTS`] starts is rolled back and quarantined
//! on that host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::script::sha256_hex;
use super::signature::{CommandSigner, KeyRing, SignatureRefusal};

/// Starts a new version may make without confirming health before the
/// sentinel restores the previous binary (the N = 3).
pub const MAX_FAILED_BOOTS: u32 = 3;

/// The exit code of an agent that installed a new binary and stops so its
/// service manager starts it (`EX_TEMPFAIL` of sysexits.h; systemd's
/// `Restart=always` restarts on any code).
pub const EXIT_UPDATED: u8 = 75;

/// This build's platform name, `<os>-<arch>` as Rust names them
/// (`linux-x86_64`, `macos-aarch64`, `windows-x86_64`).
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The binary's object name: `<platform>/<version>`.
pub fn binary_object(platform: &str, version: &str) -> String {
    format!("{platform}/{version}")
}

/// The signed description's object name: `<platform>/<version>.release`.
pub fn release_object(platform: &str, version: &str) -> String {
    format!("{platform}/{version}.release")
}

/// Whether `text` may be a version or platform in an object name: 1–64
/// characters of ASCII letters, digits and `.`, `-`, `_`, `+`, not starting
/// with `.`.
pub fn is_valid_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// What a release is: the version, the platform it runs on, and its
/// body's size and sha256 (lowercase hex).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    /// The agent version the binary reports.
    pub version: String,
    /// `<os>-<arch>` (see [`platform`]).
    pub platform: String,
    /// Size of the binary in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the binary.
    pub sha256: String,
}

/// A [`ReleaseManifest`] as the exact JSON text that was signed, with the
/// signature headers (`Kanade-Sig`, `-Kid`, `-Alg`, `-At`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelease {
    /// The manifest's JSON text, byte for byte as signed.
    pub manifest: String,
    /// The signature headers.
    pub signature: BTreeMap<String, String>,
}

impl SignedRelease {
    /// Signs `manifest` with `signer`, dated `at_ms` (ms since the epoch).
    pub fn sign(manifest: &ReleaseManifest, signer: &CommandSigner, at_ms: i64) -> Self {
        // Serialising a struct of strings and a number cannot fail.
        let text = serde_json::to_string(manifest).unwrap_or_default();
        let signature = signer.sign(text.as_bytes(), at_ms).into_iter().collect();
        Self {
            manifest: text,
            signature,
        }
    }
}

/// Why an agent refuses a release. Each is reported as an `ObsEvent` of
/// kind [`ReleaseRefusal::obs_kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseRefusal {
    /// The agent has no key ring, so nothing can verify a release.
    #[error(
        "no command-key ring is configured: a release cannot be verified, so it is not installed"
    )]
    NoKeyRing,
    /// The signature does not verify against the agent's key ring.
    #[error("release signature refused: {0}")]
    Signature(SignatureRefusal),
    /// The signed description is not a manifest.
    #[error("release description malformed: {0}")]
    Malformed(String),
    /// The signed manifest, or the body, is not what was asked for.
    #[error("release {what} mismatch: expected {expected}, got {got}")]
    Mismatch {
        /// `version`, `platform`, `size` or `sha256`.
        what: &'static str,
        /// What the agent expected.
        expected: String,
        /// What it found.
        got: String,
    },
}

impl ReleaseRefusal {
    /// The ObsEvent kind: `agent_update_refused_<reason>`.
    pub fn obs_kind(&self) -> &'static str {
        match self {
            Self::NoKeyRing => "agent_update_refused_no_key_ring",
            Self::Signature(_) => "agent_update_refused_signature",
            Self::Malformed(_) => "agent_update_refused_malformed",
            Self::Mismatch { what: "sha256", .. } | Self::Mismatch { what: "size", .. } => {
                "agent_update_refused_digest"
            }
            Self::Mismatch { .. } => "agent_update_refused_mismatch",
        }
    }
}

/// Checks a signed release description against `ring` and returns its
/// manifest, which must name `version` and `platform`.
///
/// A release is verified as of its own signing date (`Kanade-Sig-At`):
/// unlike a command it does not go stale — the binary a key signed stays
/// what it signed — while everything else of [`verify`] applies (known
/// kid, Ed25519 `verify_strict` over the date and the exact text).
///
/// # Errors
/// [`ReleaseRefusal::NoKeyRing`] with an empty ring, `Signature`,
/// `Malformed` or `Mismatch`.
pub fn verify_release(
    ring: &KeyRing,
    signed: &SignedRelease,
    version: &str,
    platform: &str,
) -> Result<ReleaseManifest, ReleaseRefusal> {
    if ring.is_empty() {
        return Err(ReleaseRefusal::NoKeyRing);
    }
    super::signed::SignedDocument {
        body: signed.manifest.clone(),
        signature: signed.signature.clone(),
    }
    .verify(ring)
    .map_err(ReleaseRefusal::Signature)?;
    let manifest: ReleaseManifest = serde_json::from_str(&signed.manifest)
        .map_err(|e| ReleaseRefusal::Malformed(e.to_string()))?;
    expect("version", version, &manifest.version)?;
    expect("platform", platform, &manifest.platform)?;
    Ok(manifest)
}

fn expect(what: &'static str, expected: &str, got: &str) -> Result<(), ReleaseRefusal> {
    if expected == got {
        Ok(())
    } else {
        Err(ReleaseRefusal::Mismatch {
            what,
            expected: expected.to_owned(),
            got: got.to_owned(),
        })
    }
}

/// Checks a downloaded body against its verified manifest: size, then
/// sha256.
///
/// # Errors
/// [`ReleaseRefusal::Mismatch`] naming `size` or `sha256`.
pub fn check_binary(manifest: &ReleaseManifest, body: &[u8]) -> Result<(), ReleaseRefusal> {
    expect("size", &manifest.size.to_string(), &body.len().to_string())?;
    expect("sha256", &manifest.sha256, &sha256_hex(body))
}

/// The version this agent should install, if any: the configured target,
/// unless there is none, it is what runs, or it was quarantined here.
pub fn wanted_version(
    running: &str,
    target: Option<&str>,
    quarantined: &[String],
) -> Option<String> {
    let target = target.map(str::trim).filter(|t| !t.is_empty())?;
    (target != running && !quarantined.iter().any(|q| q == target)).then(|| target.to_owned())
}

/// An installed version that has not yet confirmed a healthy start, kept
/// in the agent's state directory between the install and that
/// confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpdate {
    /// The version installed.
    pub version: String,
    /// The version it replaced (what a rollback restores).
    pub previous: String,
    /// Starts of the new version so far.
    pub boots: u32,
}

/// What the boot sentinel does before a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootVerdict {
    /// No update is waiting for confirmation: start as usual.
    NothingPending,
    /// Start the new version once more; keep this record (boots counted).
    Start(PendingUpdate),
    /// The new version had its starts and never confirmed: restore the
    /// previous binary and quarantine `version` on this host.
    RollBack {
        /// The version that failed.
        version: String,
        /// The version restored.
        previous: String,
    },
}

/// The sentinel's decision for the next start, given the pending record.
pub fn boot_verdict(pending: Option<PendingUpdate>) -> BootVerdict {
    match pending {
        None => BootVerdict::NothingPending,
        Some(p) if p.boots >= MAX_FAILED_BOOTS => BootVerdict::RollBack {
            version: p.version,
            previous: p.previous,
        },
        Some(mut p) => {
            p.boots += 1;
            BootVerdict::Start(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CommandSigner {
        CommandSigner::from_seed("release-key", [7; 32])
    }

    fn manifest(body: &[u8]) -> ReleaseManifest {
        ReleaseManifest {
            version: "0.2.0".into(),
            platform: "linux-x86_64".into(),
            size: body.len() as u64,
            sha256: sha256_hex(body),
        }
    }

    fn ring() -> KeyRing {
        KeyRing::from_entries(vec![signer().ring_entry(None, Some(60))]).unwrap()
    }

    #[test]
    fn a_signed_release_verifies_long_after_the_keys_max_age() {
        let body = b"new agent";
        // Signed a year ago; the key's max age (60 s) is for commands.
        let signed = SignedRelease::sign(&manifest(body), &signer(), 1_700_000_000_000);
        let got = verify_release(&ring(), &signed, "0.2.0", "linux-x86_64").unwrap();
        assert_eq!(got, manifest(body));
        check_binary(&got, body).unwrap();
    }

    #[test]
    fn every_change_is_refused() {
        let body = b"new agent";
        let signed = SignedRelease::sign(&manifest(body), &signer(), 1_700_000_000_000);
        let mut edited = signed.clone();
        edited.manifest = edited.manifest.replace("0.2.0", "0.2.1");
        assert!(matches!(
            verify_release(&ring(), &edited, "0.2.1", "linux-x86_64"),
            Err(ReleaseRefusal::Signature(_))
        ));
        let mut redated = signed.clone();
        redated.signature.insert(
            super::super::signature::HEADER_AT.into(),
            "1700000000001".into(),
        );
        assert!(matches!(
            verify_release(&ring(), &redated, "0.2.0", "linux-x86_64"),
            Err(ReleaseRefusal::Signature(_))
        ));
        let other = CommandSigner::from_seed("release-key", [8; 32]);
        let forged = SignedRelease::sign(&manifest(body), &other, 1_700_000_000_000);
        assert!(matches!(
            verify_release(&ring(), &forged, "0.2.0", "linux-x86_64"),
            Err(ReleaseRefusal::Signature(_))
        ));
        let unsigned = SignedRelease {
            manifest: signed.manifest.clone(),
            signature: BTreeMap::new(),
        };
        assert!(matches!(
            verify_release(&ring(), &unsigned, "0.2.0", "linux-x86_64"),
            Err(ReleaseRefusal::Signature(SignatureRefusal::Absent))
        ));
        // A genuine release of another version or platform is not this one.
        let refusal = verify_release(&ring(), &signed, "0.3.0", "linux-x86_64").unwrap_err();
        assert_eq!(refusal.obs_kind(), "agent_update_refused_mismatch");
        assert!(verify_release(&ring(), &signed, "0.2.0", "windows-x86_64").is_err());
        let empty = KeyRing::from_entries(vec![]).unwrap();
        assert_eq!(
            verify_release(&empty, &signed, "0.2.0", "linux-x86_64"),
            Err(ReleaseRefusal::NoKeyRing)
        );
    }

    #[test]
    fn a_body_that_differs_from_its_manifest_is_refused() {
        let m = manifest(b"new agent");
        for body in [&b"new agenT"[..], b"new agent!", b""] {
            let refusal = check_binary(&m, body).unwrap_err();
            assert_eq!(
                refusal.obs_kind(),
                "agent_update_refused_digest",
                "{body:?}"
            );
        }
    }

    #[test]
    fn the_wanted_version_skips_the_running_and_the_quarantined() {
        let q = vec!["0.3.0".to_owned()];
        assert_eq!(
            wanted_version("0.1.0", Some("0.2.0"), &q).as_deref(),
            Some("0.2.0")
        );
        assert_eq!(wanted_version("0.2.0", Some("0.2.0"), &q), None);
        assert_eq!(wanted_version("0.1.0", Some("0.3.0"), &q), None);
        assert_eq!(wanted_version("0.1.0", Some("  "), &q), None);
        assert_eq!(wanted_version("0.1.0", None, &q), None);
    }

    #[test]
    fn the_sentinel_allows_three_starts_then_rolls_back() {
        let mut pending = Some(PendingUpdate {
            version: "0.2.0".into(),
            previous: "0.1.0".into(),
            boots: 0,
        });
        for boots in 1..=MAX_FAILED_BOOTS {
            match boot_verdict(pending.take()) {
                BootVerdict::Start(p) => {
                    assert_eq!(p.boots, boots);
                    pending = Some(p);
                }
                other => panic!("start {boots}: {other:?}"),
            }
        }
        assert_eq!(
            boot_verdict(pending),
            BootVerdict::RollBack {
                version: "0.2.0".into(),
                previous: "0.1.0".into()
            }
        );
        assert_eq!(boot_verdict(None), BootVerdict::NothingPending);
    }

    #[test]
    fn names_are_checked() {
        for good in ["0.2.0", "1.0.0-rc.1+build.5", "linux-x86_64"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert_eq!(binary_object("linux-x86_64", "0.2.0"), "linux-x86_64/0.2.0");
        assert_eq!(
            release_object("linux-x86_64", "0.2.0"),
            "linux-x86_64/0.2.0.release"
        );
    }
}
