//! Output handling: the capture cap and overflow to `result_output`.

use crate::names::subjects::{result_output_key, OutputStream};
use crate::names::{SubjectToken, STDOUT_INLINE_THRESHOLD};

/// Most bytes captured per stream before head and tail are kept around a marker.
pub const CAPTURE_CAP_BYTES: usize = 8 * 1024 * 1024;

/// Where each stream of a result goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverflowPlan {
    /// Object key for stdout, when it is too large to inline.
    pub stdout_object: Option<String>,
    /// Object key for stderr, when it is too large to inline.
    pub stderr_object: Option<String>,
}

/// Whether output of `len` bytes must go to the object store.
pub fn overflows(len: usize) -> bool {
    len > STDOUT_INLINE_THRESHOLD
}

/// The bytes `text` takes inside a JSON document (quotes and escapes
/// included: a control byte becomes six, `\u001b`).
pub fn json_len(text: &str) -> usize {
    2 + text
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// Which streams of a result go to the object store (stdout, stderr),
/// decided on their **encoded** size: a stream whose JSON form is over the
/// inline threshold overflows, and while the whole encoded result
/// (`rest`: the bytes of every other field) would still not fit
/// `max_payload`, the larger stream left inline overflows too — so every
/// result fits the transport and none is parked for its size. Pure.
pub fn streams_to_overflow(
    stdout: &str,
    stderr: &str,
    rest: usize,
    max_payload: usize,
) -> (bool, bool) {
    let (out_len, err_len) = (json_len(stdout), json_len(stderr));
    let mut out = out_len > STDOUT_INLINE_THRESHOLD;
    let mut err = err_len > STDOUT_INLINE_THRESHOLD;
    let total =
        |out: bool, err: bool| rest + if out { 2 } else { out_len } + if err { 2 } else { err_len };
    while total(out, err) > max_payload && !(out && err) {
        if !out && (err || out_len >= err_len) {
            out = true;
        } else {
            err = true;
        }
    }
    (out, err)
}

/// Decides which streams overflow and names their objects
/// (`<request_id>/<pc_id>/stdout|stderr`).
pub fn plan_overflow(
    request_id: &SubjectToken,
    pc: &SubjectToken,
    stdout_len: usize,
    stderr_len: usize,
) -> OverflowPlan {
    let key = |len, stream| overflows(len).then(|| result_output_key(request_id, pc, stream));
    OverflowPlan {
        stdout_object: key(stdout_len, OutputStream::Stdout),
        stderr_object: key(stderr_len, OutputStream::Stderr),
    }
}

/// Caps captured output at `cap` bytes: longer output keeps its first and
/// last `cap / 2` bytes around a marker naming the original size.
pub fn cap_capture(output: &[u8], cap: usize) -> Vec<u8> {
    if output.len() <= cap {
        return output.to_vec();
    }
    let half = cap / 2;
    let marker = format!(
        "\n[kanade: output truncated: {} bytes in all, {} kept]\n",
        output.len(),
        half * 2
    );
    let mut capped = Vec::with_capacity(half * 2 + marker.len());
    capped.extend_from_slice(&output[..half]);
    capped.extend_from_slice(marker.as_bytes());
    capped.extend_from_slice(&output[output.len() - half..]);
    capped
}

#[cfg(test)]
mod encoded_size_tests {
    use super::*;

    #[test]
    fn the_encoded_size_decides() {
        assert_eq!(json_len("ab"), 4);
        assert_eq!(json_len("\u{1b}"), 8);
        assert_eq!(json_len("\n\"é"), 2 + 2 + 2 + 2);
        let escapes = "\u{1b}".repeat(200_000);
        assert!(!overflows(escapes.len()), "under the raw threshold");
        assert_eq!(
            streams_to_overflow(&escapes, "", 500, 1 << 20),
            (true, false)
        );
        let plain = "x".repeat(200_000);
        assert_eq!(
            streams_to_overflow(&plain, &plain, 500, 1 << 20),
            (false, false)
        );
        // Together over a small limit: the larger one goes first, then the other.
        assert_eq!(
            streams_to_overflow(&plain, "small", 500, 150_000),
            (true, false)
        );
        assert_eq!(
            streams_to_overflow(&plain, &plain, 500, 150_000),
            (true, true)
        );
    }
}
