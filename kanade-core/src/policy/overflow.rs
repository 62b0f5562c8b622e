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
