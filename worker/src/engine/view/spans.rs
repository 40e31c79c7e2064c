//! A saga's timeline on a time axis: each attempt as a bar, and the waits
//! between attempts (a retry's backoff, an open breaker, an operator),
//! read from the same events as `show` on both engines. The dashboard
//! draws them; operator commands are marked from [`super::commands`].
//!
//! A saga runs one attempt at a time, so the gap between an attempt's end
//! and the next one's start is either noise (the next step's dispatch) or
//! one of the waits named here; which one is read from what ended the
//! gap, never from its length.

use super::{attempt, EventRow};
use sagaflow_workflows::BREAKER_OPEN;
use serde::Serialize;

/// One bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Step name.
    pub step: String,
    /// "action" or "compensation".
    pub phase: &'static str,
    /// "attempt"; or a wait: "retry_wait" (the backoff before the next
    /// attempt), "breaker_wait" (an open breaker refused the call; no
    /// attempt is spent while it waits) or "parked" (until an operator's
    /// command, or still).
    pub kind: &'static str,
    /// Start, ms since the Unix epoch.
    pub start_ms: u64,
    /// End; `None` while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// For an attempt: its number within the step's phase (refusals by an
    /// open breaker are not attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// For an attempt: whether it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// For a failed attempt or a breaker wait: the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last attempt (or refusal) seen, which a wait may follow.
struct Last {
    step: String,
    phase: &'static str,
    end_ms: u64,
    /// Refused by an open breaker, or failed and sent to wait for one.
    breaker: Option<String>,
    failed: bool,
}

/// The bars of a saga whose events are `events` and whose status is
/// `status` (a parked saga's last wait is open; so is the wait of a
/// running saga whose last call failed or was refused).
pub fn spans(events: &[EventRow], status: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut attempts: Vec<((String, &'static str), u32)> = Vec::new();
    let mut last: Option<Last> = None;
    // An operator's command since the last attempt: the wait was parked.
    let mut commanded_at: Option<u64> = None;
    for e in events {
        if e.kind == "signal" {
            commanded_at.get_or_insert(e.at_ms);
            continue;
        }
        let Some(b) = attempt(e) else {
            continue;
        };
        let phase = b.phase.name();
        if let Some(prev) = last.take() {
            let (kind, end) = match (commanded_at.take(), &prev.breaker) {
                (Some(at), _) => ("parked", at),
                (None, Some(_)) => ("breaker_wait", b.started_ms),
                (None, None) if prev.failed && prev.step == b.step && prev.phase == phase => {
                    ("retry_wait", b.started_ms)
                }
                _ => ("", 0),
            };
            if !kind.is_empty() && end > prev.end_ms {
                out.push(Span {
                    step: prev.step,
                    phase: prev.phase,
                    kind,
                    start_ms: prev.end_ms,
                    end_ms: Some(end),
                    attempt: None,
                    ok: None,
                    error: prev.breaker,
                });
            }
        }
        commanded_at = None;
        let refused = b.error.as_ref().is_some_and(|err| err.kind == BREAKER_OPEN);
        let waits_for_breaker = b.error.as_ref().and_then(|err| {
            err.wait
                .as_ref()
                .map(|w| format!("{} breaker open: {err}", w.dependency))
        });
        if !refused {
            let key = (b.step.clone(), phase);
            let n = match attempts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    attempts.push((key, 1));
                    1
                }
            };
            out.push(Span {
                step: b.step.clone(),
                phase,
                kind: "attempt",
                start_ms: b.started_ms,
                end_ms: Some(e.at_ms.max(b.started_ms)),
                attempt: Some(n),
                ok: Some(b.error.is_none()),
                error: b.error.as_ref().map(ToString::to_string),
            });
        }
        last = Some(Last {
            step: b.step,
            phase,
            end_ms: e.at_ms,
            breaker: waits_for_breaker,
            failed: b.error.is_some(),
        });
    }
    // What the saga waits for now.
    if let Some(prev) = last {
        let kind = match status {
            "parked" => Some("parked"),
            "running" | "compensating" if prev.breaker.is_some() => Some("breaker_wait"),
            // A failure without a wait may be retried or compensated next:
            // no bar until the next event says which.
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Span {
                step: prev.step,
                phase: prev.phase,
                kind,
                start_ms: prev.end_ms,
                end_ms: commanded_at.filter(|_| kind == "parked"),
                attempt: None,
                ok: None,
                error: prev.breaker,
            });
        }
    }
    out
}
