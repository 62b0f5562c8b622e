//! Subject syntax and wildcard matching, with NATS rules: tokens separated
//! by `.`, `*` matches exactly one token, `>` (last token only) matches one
//! or more tokens.

use super::{TransportError, TransportResult};

/// Checks a concrete subject (no wildcards) that a message is published to.
pub fn validate_subject(subject: &str) -> TransportResult<()> {
    validate(subject, false)
}

/// Checks a subscription or filter pattern (wildcards allowed).
pub fn validate_pattern(pattern: &str) -> TransportResult<()> {
    validate(pattern, true)
}

fn validate(subject: &str, wildcards: bool) -> TransportResult<()> {
    let invalid = |reason| TransportError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    };
    if subject.is_empty() {
        return Err(invalid("empty"));
    }
    // Every published message passes here: one pass over the bytes per
    // token, no allocation. An all-ASCII subject (every subject kanade
    // builds) is checked byte by byte; only others decode their chars.
    let ascii = subject.is_ascii();
    let mut tokens = subject.as_bytes().split(|&b| b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(invalid("empty token"));
        }
        if holds_space_or_control(token, ascii) {
            return Err(invalid("whitespace or control character"));
        }
        let is_wildcard = token == b"*" || token == b">";
        let holds_wildcard = token.iter().any(|&b| b == b'*' || b == b'>');
        if !wildcards && holds_wildcard {
            return Err(invalid("wildcards are not allowed in a published subject"));
        }
        if wildcards && !is_wildcard && holds_wildcard {
            return Err(invalid("a wildcard must be a whole token"));
        }
        if token == b">" && tokens.peek().is_some() {
            return Err(invalid("'>' must be the last token"));
        }
    }
    Ok(())
}

/// Whether a token holds a whitespace or control character (Unicode's
/// definitions, as `char::is_whitespace` and `char::is_control`). In ASCII
/// those are exactly the bytes up to the space and DEL. A token is split
/// at `.`, an ASCII byte, so it is whole UTF-8 whenever its subject is.
fn holds_space_or_control(token: &[u8], ascii: bool) -> bool {
    if ascii {
        return token.iter().any(|&b| b <= b' ' || b == 0x7f);
    }
    std::str::from_utf8(token).map_or(true, |token| {
        token.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// Checks a key against the NATS KV key alphabet (`[-/_=.A-Za-z0-9]`, no
/// leading or trailing `.`, no empty token).
pub fn validate_kv_key(key: &str) -> TransportResult<()> {
    let invalid = |reason| TransportError::InvalidSubject {
        subject: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(invalid("a key must be non-empty dot-separated tokens"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
    {
        return Err(invalid("a key may hold only A-Z a-z 0-9 - / _ = ."));
    }
    Ok(())
}

/// Whether `subject` (concrete) matches `pattern` (may hold wildcards).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether any of `patterns` matches `subject`.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], subject: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), subject))
}

/// Whether two patterns can both match some subject.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a_tokens = a.split('.');
    let mut b_tokens = b.split('.');
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(matches("commands.*", "commands.all"));
        assert!(!matches("commands.*", "commands.pc.a"));
        assert!(matches("commands.>", "commands.pc.a"));
        assert!(!matches("commands.>", "commands"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches(">", "x"));
        assert!(overlaps("commands.>", "commands.pc.*"));
        assert!(!overlaps("results.>", "commands.>"));
    }

    #[test]
    fn syntax_is_checked() {
        assert!(validate_subject("a.b").is_ok());
        assert!(validate_subject("a.*").is_err());
        assert!(validate_subject("a..b").is_err());
        assert!(validate_subject("a b").is_err());
        assert!(validate_pattern("a.>").is_ok());
        assert!(validate_pattern("a.>.b").is_err());
        assert!(validate_pattern("a.b*").is_err());
        assert!(validate_pattern("").is_err());
    }

    /// The checks as first written, one `char` at a time.
    fn validate_by_chars(subject: &str, wildcards: bool) -> bool {
        if subject.is_empty() {
            return false;
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        tokens.iter().enumerate().all(|(i, token)| {
            let is_wildcard = *token == "*" || *token == ">";
            let holds_wildcard = token.contains(['*', '>']);
            !token.is_empty()
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
                && (!holds_wildcard || (wildcards && is_wildcard))
                && (*token != ">" || i + 1 == tokens.len())
        })
    }

    #[test]
    fn the_byte_checks_agree_with_the_char_checks() {
        let mut subjects: Vec<String> = Vec::new();
        // Every ASCII character alone, inside a token, and as a token.
        for b in 0u8..=0x7f {
            let c = char::from(b);
            subjects.extend([
                format!("{c}"),
                format!("a{c}b.c"),
                format!("a.{c}"),
                format!("{c}.>"),
            ]);
        }
        // Unicode whitespace and controls, and ordinary non-ASCII letters.
        for c in [
            '\u{a0}', '\u{85}', '\u{2028}', '\u{3000}', '\u{200b}', 'é', 'ß', '日', '🚀',
        ] {
            subjects.extend([
                format!("{c}"),
                format!("a{c}.b"),
                format!("a.b{c}"),
                format!("{c}.*"),
            ]);
        }
        subjects.extend(
            [
                "a.>.b",
                "a.b*",
                "*",
                ">",
                "a..b",
                ".a",
                "a.",
                "a.*.>",
                "commands.pc.x-1",
            ]
            .map(str::to_owned),
        );
        for subject in &subjects {
            for wildcards in [false, true] {
                assert_eq!(
                    validate(subject, wildcards).is_ok(),
                    validate_by_chars(subject, wildcards),
                    "{subject:?} (wildcards: {wildcards})"
                );
            }
        }
    }
}
