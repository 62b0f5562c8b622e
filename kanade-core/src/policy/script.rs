//! Script body verification: the body an agent fetched must be the one the
//! operator approved when the command was built.

use sha2::{Digest, Sha256};

/// Largest script body accepted: 4 MiB.
pub const MAX_SCRIPT_BYTES: usize = 4 * 1024 * 1024;

/// Why a script body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptBodyError {
    /// The expected digest is not 64 hex characters.
    #[error("expected sha256 {expected:?} is not 64 hex characters")]
    MalformedDigest {
        /// The digest the command carried.
        expected: String,
    },
    /// The body is larger than [`MAX_SCRIPT_BYTES`].
    #[error("script body is {len} bytes; at most {limit} are allowed")]
    TooLarge {
        /// Body length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body's digest differs from the approved one.
    #[error("script body sha256 is {actual} but the command approved {expected}")]
    DigestMismatch {
        /// The approved digest (lowercase hex).
        expected: String,
        /// The fetched body's digest (lowercase hex).
        actual: String,
    },
    /// The body is not valid UTF-8.
    #[error("script body is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checks a fetched body against the approved digest (hex, any case), the
/// size cap and UTF-8, returning the body as text.
pub fn verify_script_body<'a>(
    body: &'a [u8],
    expected_sha256: &str,
) -> Result<&'a str, ScriptBodyError> {
    let expected = expected_sha256.trim();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ScriptBodyError::MalformedDigest {
            expected: expected_sha256.to_owned(),
        });
    }
    if body.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptBodyError::TooLarge {
            len: body.len(),
            limit: MAX_SCRIPT_BYTES,
        });
    }
    let actual = sha256_hex(body);
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ScriptBodyError::DigestMismatch {
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    std::str::from_utf8(body).map_err(|e| ScriptBodyError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}
