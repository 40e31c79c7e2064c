//! What a line script's answers mean to a caller, and the claim tokens
//! that tell one attempt of a multi-line call from another.

use sagaflow_workflows::ActivityError;
use std::sync::atomic::{AtomicU64, Ordering};

/// A release of a reservation that is (partly) sold.
pub(super) fn already_committed(reservation: &str) -> ActivityError {
    ActivityError::business(
        "already_committed",
        format!("reservation {reservation} is committed (sold); it cannot be released"),
    )
}

/// A `verb` on a reservation already in `state` (a script's state code).
pub(super) fn closed(reservation: &str, state: &str, verb: &str) -> ActivityError {
    ActivityError::business(
        "reservation_closed",
        format!(
            "reservation {reservation} is {}; it cannot be {verb}",
            state_name(state)
        ),
    )
}

/// A line state code (`R`, `C`, `L`, `X`, `T`) in words.
pub(super) fn state_name(code: &str) -> &str {
    match code {
        "R" => "reserved",
        "C" => "committed",
        "L" => "released",
        "X" => "expired",
        "T" => "returned",
        other => other,
    }
}

/// A token naming one attempt of a multi-line call ("" for one line, which
/// needs no undo). Unique per process and call; the `t` keeps Lua's cjson
/// from ever reading it as a number.
pub(super) fn claim_token(lines: &[(String, u32)]) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if lines.len() < 2 {
        return String::new();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "t{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
