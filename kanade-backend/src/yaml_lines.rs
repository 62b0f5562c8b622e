//! Which line of a YAML manifest a field is on, block or flow style: what
//! every manifest error names.

/// The 1-based line of the key at `path` (e.g. `["execute", "timeout"]`),
/// found by indentation.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    block_line_of(text, path).or_else(|| flow_line_of(text, path))
}

/// A key inside flow-style YAML (`execute: { shell: sh, timeout: soon }`):
/// the first line after the top key's line where `key:` stands after `{`,
/// `,` or a blank; else the deepest ancestor's line. Every manifest error
/// names a line, whatever the YAML style.
fn flow_line_of(text: &str, path: &[&str]) -> Option<usize> {
    let (top, rest) = path.split_first()?;
    let start = block_line_of(text, &[top])?;
    let mut found = start;
    for key in rest {
        match text
            .lines()
            .enumerate()
            .skip(found - 1)
            .find(|(_, line)| has_key(line, key))
        {
            Some((index, _)) => found = index + 1,
            None => break,
        }
    }
    Some(found)
}

fn block_line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut depth_indent: Option<usize> = None;
    let mut level = 0;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(parent) = depth_indent {
            if indent <= parent && level > 0 {
                return None;
            }
        }
        let key = path[level];
        let bare = trimmed.trim_start_matches("- ");
        if bare.starts_with(&format!("{key}:")) && depth_indent.is_none_or(|p| indent > p) {
            if level + 1 == path.len() {
                return Some(number + 1);
            }
            depth_indent = Some(indent);
            level += 1;
        }
    }
    None
}

/// Whether `line` has `key:` as a key (at its start, or after `{`, `,` or
/// a blank, as in flow style).
pub(crate) fn has_key(line: &str, key: &str) -> bool {
    let needle = format!("{key}:");
    line.match_indices(&needle).any(|(at, _)| {
        at == 0
            || line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c == '{' || c == ',' || c.is_whitespace())
    })
}
