//! Words for people: how a duration or a YAML reader's complaint reads in
//! a manifest error (pure text, no I/O; a leaf the manifest and approval
//! modules both use).

/// Why a duration does not parse, in words (humantime's own errors say
/// things like "expected number at 0").
pub fn duration_problem(value: &str, _error: &humantime::DurationError) -> String {
    format!("{value:?} is not a duration: write a number and a unit, like 30s, 5m or 1h 30m")
}

/// A YAML reader's message as (field, sentence): the dotted path it starts
/// with becomes the field, the trailing "at line N column M" goes (the
/// line is reported on its own), and serde's phrasing becomes a sentence
/// (pure).
pub fn describe_yaml_error(message: &str) -> (String, String) {
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    let (path, rest) = match message.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) =>
        {
            (path.to_owned(), rest)
        }
        _ => (String::new(), message),
    };
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    let quoted = |text: &str| text.split('`').nth(1).unwrap_or_default().to_owned();
    if let Some(tail) = rest.strip_prefix("unknown field ") {
        let name = quoted(tail);
        let allowed = tail
            .split_once(", expected ")
            .map_or(String::new(), |(_, a)| a.to_owned());
        return (
            join(&name),
            format!("`{name}` is not a known key here; use {allowed}"),
        );
    }
    if let Some(tail) = rest.strip_prefix("missing field ") {
        return (join(&quoted(tail)), "is required but missing".to_owned());
    }
    if let Some(tail) = rest.strip_prefix("unknown variant ") {
        let value = quoted(tail);
        let allowed = tail
            .split_once(", expected ")
            .map_or(String::new(), |(_, a)| a.to_owned());
        return (path, format!("`{value}` is not allowed; use {allowed}"));
    }
    (path, rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_messages_become_field_and_sentence() {
        assert_eq!(
            describe_yaml_error("execute.shell: unknown variant `zsh`, expected one of `sh`, `bash` at line 4 column 10"),
            ("execute.shell".into(), "`zsh` is not allowed; use one of `sh`, `bash`".into())
        );
        assert_eq!(
            describe_yaml_error("execute: missing field `timeout` at line 4 column 3"),
            ("execute.timeout".into(), "is required but missing".into())
        );
        assert_eq!(
            describe_yaml_error(
                "unknown field `colour`, expected `id` or `version` at line 7 column 1"
            ),
            (
                "colour".into(),
                "`colour` is not a known key here; use `id` or `version`".into()
            )
        );
        assert_eq!(
            describe_yaml_error("did not find expected key at line 2 column 5"),
            (String::new(), "did not find expected key".into())
        );
        let e = humantime::parse_duration("soon").unwrap_err();
        assert!(duration_problem("soon", &e).contains("like 30s, 5m"));
    }
}
