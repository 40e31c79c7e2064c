//! What `show` reads out of a saga's events: breaker waits and attempts
//! told apart.

use super::*;
use sagaflow_workflows::{ActivityError, DependencyWait, RetryPolicy, StepDef};
use serde_json::json;

fn def() -> SagaDef {
    let step = |name: &str, action: &str| StepDef {
        name: name.into(),
        action: action.into(),
        compensation: None,
        timeout_ms: 1_000,
        compensation_timeout_ms: None,
        max_wait_ms: None,
        settle_ms: None,
        retry: RetryPolicy::default(),
    };
    SagaDef {
        name: "checkout".into(),
        steps: vec![
            step("reserve", "stock.reserve"),
            step("authorize", "payment.authorize"),
        ],
        pivot: None,
        compensation_retry: RetryPolicy::default(),
    }
}

fn wait() -> DependencyWait {
    DependencyWait {
        dependency: "payment".into(),
        since_ms: 5_000,
        retry_after_ms: 4_000,
    }
}

fn attempt(n: u32, step: &str, number: u32, error: Option<ActivityError>) -> EventRow {
    let body = AttemptBody {
        step: step.into(),
        activity: if step == "reserve" {
            "stock.reserve".into()
        } else {
            "payment.authorize".into()
        },
        phase: Phase::Action,
        attempt: number,
        started_ms: 1_000 * u64::from(n),
        output: error.is_none().then(|| json!({})),
        error,
    };
    EventRow {
        n,
        at_ms: 1_000 * u64::from(n) + 10,
        kind: if body.error.is_some() {
            "activity_failed".into()
        } else {
            "activity_completed".into()
        },
        seq: Some(n),
        body: serde_json::to_value(body).unwrap(),
    }
}

/// A refusal is a wait and not an attempt; a failed probe (made, failed,
/// sent to wait) is both; `show` says what the saga waits for while its
/// last attempt carries a wait, and not once the saga has ended.
#[test]
fn the_timeline_counts_refusals_as_waits_and_failed_probes_as_both() {
    let mut failed_probe = ActivityError::retryable("http_503", "unavailable");
    failed_probe.wait = Some(Box::new(wait()));
    let events = vec![
        attempt(1, "reserve", 1, None),
        attempt(2, "authorize", 1, Some(failed_probe)),
        attempt(3, "authorize", 2, Some(ActivityError::breaker_open(wait()))),
        attempt(4, "authorize", 2, Some(ActivityError::breaker_open(wait()))),
    ];
    let t = timeline(&def(), &events, "running");
    let authorize = &t[1];
    assert_eq!(authorize.step, "authorize");
    assert_eq!(authorize.attempts, 1, "only the failed probe was made");
    assert_eq!(authorize.breaker_waits, 3);
    assert_eq!(authorize.status, "running", "still trying");
    assert_eq!(
        breaker_wait(&events, "running"),
        Some(("payment".to_owned(), 5_000))
    );
    assert_eq!(breaker_wait(&events, "compensated"), None);

    let mut done = events.clone();
    done.push(attempt(5, "authorize", 2, None));
    let t = timeline(&def(), &done, "completed");
    assert_eq!((t[1].attempts, t[1].status), (2, "ok"));
    assert_eq!(
        breaker_wait(&done, "running"),
        None,
        "the last attempt went through"
    );
}

fn signal(n: u32, at_ms: u64) -> EventRow {
    EventRow {
        n,
        at_ms,
        kind: "signal".into(),
        seq: None,
        body: json!({"signal": "retry", "operator": "alice", "reason": "back"}),
    }
}

/// The bars a dashboard draws: attempts numbered without the refusals,
/// the backoff between two attempts of one step, a breaker's wait up to
/// the next attempt, and a park that lasts until the operator's command;
/// a saga parked now has an open bar.
#[test]
fn spans_tell_attempts_from_retry_breaker_and_operator_waits() {
    let events = vec![
        attempt(1, "reserve", 1, None),
        attempt(
            2,
            "authorize",
            1,
            Some(ActivityError::retryable("timeout", "slow")),
        ),
        attempt(3, "authorize", 2, Some(ActivityError::breaker_open(wait()))),
        attempt(
            4,
            "authorize",
            2,
            Some(ActivityError::retryable("timeout", "slow")),
        ),
    ];
    let kinds = |s: &[spans::Span]| -> Vec<(&'static str, u64, Option<u64>, Option<u32>)> {
        s.iter()
            .map(|s| (s.kind, s.start_ms, s.end_ms, s.attempt))
            .collect()
    };
    let parked = spans(&events, "parked");
    assert_eq!(
        kinds(&parked),
        [
            ("attempt", 1_000, Some(1_010), Some(1)),
            ("attempt", 2_000, Some(2_010), Some(1)),
            ("retry_wait", 2_010, Some(3_000), None),
            ("breaker_wait", 3_010, Some(4_000), None),
            ("attempt", 4_000, Some(4_010), Some(2)),
            ("parked", 4_010, None, None),
        ]
    );
    assert_eq!(parked[1].ok, Some(false));
    assert!(parked[1].error.as_deref().unwrap().contains("slow"));
    assert!(parked[3]
        .error
        .as_deref()
        .unwrap()
        .contains("payment breaker open"));

    let mut retried = events.clone();
    retried.push(signal(5, 4_500));
    retried.push(attempt(6, "authorize", 3, None));
    let after = spans(&retried, "completed");
    assert_eq!(
        kinds(&after)[5..],
        [
            ("parked", 4_010, Some(4_500), None),
            ("attempt", 6_000, Some(6_010), Some(3)),
        ]
    );
    assert_eq!(after[6].ok, Some(true));
    // Ended: no open bar; a step that follows another leaves no wait.
    assert!(spans(&events[..2], "compensated")
        .iter()
        .all(|s| s.kind == "attempt"));
}
