//! [`SubjectToken`]: a value that is safe to embed as one subject / key token.

use std::fmt;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// What a token names; used to word errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A pc (agent) id.
    PcId,
    /// A group name.
    Group,
    /// An execution id.
    ExecId,
    /// A request id.
    RequestId,
    /// An audit actor.
    Actor,
    /// An audit action.
    Action,
    /// An audit target.
    Target,
    /// A job id.
    JobId,
    /// A schedule id.
    ScheduleId,
    /// A check name (`check.name` of a job).
    CheckName,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::PcId => "pc id",
            TokenKind::Group => "group name",
            TokenKind::ExecId => "exec id",
            TokenKind::RequestId => "request id",
            TokenKind::Actor => "actor",
            TokenKind::Action => "action",
            TokenKind::Target => "target",
            TokenKind::JobId => "job id",
            TokenKind::ScheduleId => "schedule id",
            TokenKind::CheckName => "check name",
        })
    }
}

/// Why a value cannot be a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// The value is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// What the value was meant to name.
        kind: TokenKind,
    },
    /// The value is longer than [`MAX_TOKEN_LEN`] bytes.
    #[error("{kind} {value:?} is {len} bytes long; at most {MAX_TOKEN_LEN} are allowed")]
    TooLong {
        /// What the value was meant to name.
        kind: TokenKind,
        /// The rejected value.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The value holds a character outside `A-Z a-z 0-9 - _`.
    #[error(
        "{kind} {value:?} contains {found:?} at byte {at}: only ASCII letters, digits, '-' and '_' \
         are allowed ('.', '*', '>', whitespace and control characters would split or widen a subject)"
    )]
    ForbiddenChar {
        /// What the value was meant to name.
        kind: TokenKind,
        /// The rejected value.
        value: String,
        /// The first offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Whether `c` may appear in a subject token.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A pc id, group, exec id or request id proven safe to use as exactly one
/// subject token, KV key segment and object key segment.
///
/// The alphabet is ASCII letters, digits, `-` and `_`: no `.` (token
/// separator), `*` / `>` (wildcards), `/` (object key separator), whitespace
/// or control characters.
///
/// ```
/// use kanade_core::names::{SubjectToken, TokenKind};
///
/// let pc = SubjectToken::new(TokenKind::PcId, "PC-0042").unwrap();
/// assert_eq!(pc.as_str(), "PC-0042");
///
/// let err = SubjectToken::new(TokenKind::PcId, "pc.example.com").unwrap_err();
/// assert!(err.to_string().contains("pc id \"pc.example.com\" contains '.'"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectToken(String);

impl SubjectToken {
    /// Validates `value` as a token naming a `kind`.
    pub fn new(kind: TokenKind, value: impl Into<String>) -> Result<Self, InvalidToken> {
        let value = value.into();
        if value.is_empty() {
            return Err(InvalidToken::Empty { kind });
        }
        if let Some((at, found)) = value.char_indices().find(|(_, c)| !is_token_char(*c)) {
            return Err(InvalidToken::ForbiddenChar {
                kind,
                value,
                found,
                at,
            });
        }
        if value.len() > MAX_TOKEN_LEN {
            let len = value.len();
            return Err(InvalidToken::TooLong { kind, value, len });
        }
        Ok(Self(value))
    }

    /// Shorthand for a pc id.
    pub fn pc(value: impl Into<String>) -> Result<Self, InvalidToken> {
        Self::new(TokenKind::PcId, value)
    }

    /// Shorthand for a group name.
    pub fn group(value: impl Into<String>) -> Result<Self, InvalidToken> {
        Self::new(TokenKind::Group, value)
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the token, returning its text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SubjectToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SubjectToken {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
