//! W3C trace context (`traceparent`) from the message that carried an
//! order to the provider's HTTP requests: the trace a shop's producer
//! started goes on through the saga.
//!
//! The order keeps the message's `traceparent` ([`crate::Order`]), so
//! both engines, every attempt and every replay see it. Each attempt
//! calls on with a child: the same trace id and flags, and a parent id
//! derived from the attempt (its idempotency key and number), so the
//! provider's log ties every request to its attempt and the attempt to
//! the order's trace. The context is scoped to the attempt's task
//! ([`scope`]); an adapter reads it with [`current`].

use std::future::Future;

tokio::task_local! {
    static CURRENT: Option<String>;
}

/// True for a W3C `traceparent` of version 00:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, with neither
/// id all zeros.
pub fn is_valid(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// The trace id of a valid `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    is_valid(traceparent).then(|| &traceparent[3..35])
}

/// The context an attempt calls on with: `traceparent`'s trace id and
/// flags, and a parent id derived from `key` and `attempt` (the same for
/// the same attempt, never all zeros). `None` when `traceparent` is not
/// valid.
pub fn child(traceparent: &str, key: &str, attempt: u32) -> Option<String> {
    let trace = trace_id(traceparent)?;
    let flags = &traceparent[53..55];
    let span = attempt_span_id(key, attempt);
    Some(format!("00-{trace}-{span:016x}-{flags}"))
}

// The span ids of a saga's trace. They are derived, not drawn, so the
// span a worker reports after a crash has the id its children (reported
// before it, perhaps by another worker) name as their parent, and the id
// the provider saw is the attempt's span id.

/// The span id of attempt `attempt` under idempotency key `key`: the
/// parent id its provider requests carry ([`child`]).
pub fn attempt_span_id(key: &str, attempt: u32) -> u64 {
    fnv(&[key.as_bytes(), &attempt.to_le_bytes()])
}

/// The span id of the run of a step's action or compensation (key `key`)
/// that began with attempt `first_attempt`.
pub fn step_span_id(key: &str, first_attempt: u32) -> u64 {
    fnv(&[key.as_bytes(), b"#run", &first_attempt.to_le_bytes()])
}

/// The span id of saga `saga_id`.
pub fn saga_span_id(saga_id: &str) -> u64 {
    fnv(&[saga_id.as_bytes(), b"#saga"])
}

/// The trace id of a saga whose order came without a trace context.
pub fn saga_trace_id(saga_id: &str) -> u128 {
    let high = fnv(&[saga_id.as_bytes(), b"#trace-high"]);
    let low = fnv(&[saga_id.as_bytes(), b"#trace-low"]);
    (u128::from(high) << 64) | u128::from(low)
}

/// 64-bit FNV-1a over `parts` in order; never 0 (not a valid span id).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// Runs `f` with `traceparent` as the current context.
pub async fn scope<F: Future>(traceparent: Option<String>, f: F) -> F::Output {
    CURRENT.scope(traceparent, f).await
}

/// The context of the attempt this task runs, if its order carried one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_contexts_are_told_from_invalid_ones() {
        assert!(is_valid(TP));
        assert_eq!(trace_id(TP), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.",
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert_eq!(child(bad, "k", 1), None);
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_and_names_its_attempt() {
        let a = child(TP, "o-1/authorize_payment", 1).unwrap();
        let again = child(TP, "o-1/authorize_payment", 1).unwrap();
        let next = child(TP, "o-1/authorize_payment", 2).unwrap();
        assert!(is_valid(&a), "{a}");
        assert_eq!(a, again, "the same attempt, the same parent id");
        assert_ne!(a, next);
        assert_eq!(trace_id(&a), trace_id(TP));
        assert!(a.ends_with("-01"));
        assert_ne!(&a[36..52], &TP[36..52], "a new parent id");
    }

    #[test]
    fn a_childs_parent_id_is_its_attempts_span_id() {
        let a = child(TP, "o-1/authorize_payment", 3).unwrap();
        let id = attempt_span_id("o-1/authorize_payment", 3);
        assert_eq!(&a[36..52], format!("{id:016x}"));
    }

    #[test]
    fn the_derived_ids_differ_by_what_they_name() {
        let ids = [
            attempt_span_id("o-1/pay", 1),
            attempt_span_id("o-1/pay", 2),
            attempt_span_id("o-1/pay/compensate", 1),
            step_span_id("o-1/pay", 1),
            step_span_id("o-1/pay", 4),
            saga_span_id("o-1"),
            saga_span_id("o-2"),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:x?}");
        assert_eq!(saga_trace_id("o-1"), saga_trace_id("o-1"));
        assert_ne!(saga_trace_id("o-1"), saga_trace_id("o-2"));
        assert_ne!(
            saga_trace_id("o-1") >> 64,
            saga_trace_id("o-1") & u128::from(u64::MAX)
        );
    }

    #[tokio::test]
    async fn the_context_is_the_scopes_and_none_outside_it() {
        assert_eq!(current(), None);
        let seen = scope(Some(TP.to_owned()), async { current() }).await;
        assert_eq!(seen.as_deref(), Some(TP));
        assert_eq!(scope(None, async { current() }).await, None);
    }
}
