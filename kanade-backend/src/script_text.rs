//! Script bodies as editors save them: normalised or refused at upload
//! (case 7 of the reliability issue).

use kanade_core::wire::Shell;

/// What an editor may have saved, made runnable (case 7 of the
/// reliability issue): a leading UTF-8 byte-order mark is dropped (no
/// interpreter wants it); for `sh` and `bash`, Windows line endings become
/// `\n` (a `\r` would end every command name); PowerShell and cmd keep
/// theirs. Pure.
pub fn normalise_script(script: String, shell: Shell) -> String {
    let script = match script.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => script,
    };
    if matches!(shell, Shell::Sh | Shell::Bash) && script.contains('\r') {
        script.replace("\r\n", "\n")
    } else {
        script
    }
}

/// A script file's text from its bytes, as the CLI uploads it: UTF-8
/// (a byte-order mark allowed), or UTF-16 with a byte-order mark (little
/// or big endian), decoded. Anything else is refused with a message
/// naming the file.
///
/// # Errors
/// A text that is neither, naming `name`.
pub fn decode_script_file(name: &str, bytes: &[u8]) -> Result<String, String> {
    let utf16 = |bytes: &[u8], little: bool| {
        if !bytes.len().is_multiple_of(2) {
            return Err(format!("{name}: UTF-16 with an odd number of bytes"));
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| {
                if little {
                    u16::from_le_bytes([pair[0], pair[1]])
                } else {
                    u16::from_be_bytes([pair[0], pair[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|e| format!("{name}: invalid UTF-16: {e}"))
    };
    match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| {
            format!(
                "{name} is not text kanade can read: save it as UTF-8 (or UTF-16 with a byte-order mark)"
            )
        }),
    }
}
