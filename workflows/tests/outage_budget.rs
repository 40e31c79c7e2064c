//! What an outage costs a step's retry budget (issue 31): attempts that
//! failed in the run of failures a breaker then opened on are given back,
//! a void settles by time rather than by a count of attempts, and a
//! `Retry-After` lengthens the wait before the next attempt.

use sagaflow_workflows::{ActivityError, DependencyWait, SagaStatus};

mod common;
use common::checkout;
use common::drive::*;

fn unavailable() -> ActivityError {
    ActivityError::retryable("http_503", "unavailable")
}

/// A failure counted while the breaker was closed, in the run that
/// began at `run`.
fn in_run(run: u64) -> ActivityError {
    ActivityError {
        failing_since_ms: Some(run),
        ..unavailable()
    }
}

/// The failure that opened the breaker on the run that began at `run`.
fn opening(run: u64) -> ActivityError {
    ActivityError {
        wait: Some(Box::new(DependencyWait {
            dependency: "payment".into(),
            since_ms: run,
            retry_after_ms: 5_000,
        })),
        ..unavailable()
    }
}

/// Four attempts fail before the breaker opens (defect 1: at a sale's
/// rate the run of failures that opens it takes a saga's budget with
/// it), the fifth opens it, and after the outage one more attempt fails.
/// The four are given back: the saga has attempts left and completes.
/// Had the breaker opened on another run, they would count, and the
/// fifth failure would end the step's budget.
#[test]
fn attempts_failed_in_the_run_the_breaker_opened_on_are_given_back() {
    for (opened_on, end) in [
        (7_000, SagaStatus::Completed),
        (9_999, SagaStatus::Compensated),
    ] {
        let mut calls = 0;
        let run = drive(
            &checkout(),
            |c| match c.activity.as_str() {
                "payment.authorize" => {
                    calls += 1;
                    match calls {
                        1..=4 => Err(in_run(7_000)),
                        5 => Err(opening(opened_on)),
                        6 => Err(unavailable()),
                        _ => ok(c),
                    }
                }
                _ => ok(c),
            },
            &[],
        );
        assert_eq!(run.end, Some(end.clone()), "opened on {opened_on}");
        if end == SagaStatus::Completed {
            assert_eq!(
                attempts_of(&run, "payment.authorize"),
                [1, 2, 3, 4, 5, 6, 7]
            );
            assert!(!names(&run).contains(&"undo:payment.void".to_owned()));
        } else {
            assert_eq!(attempts_of(&run, "payment.authorize"), [1, 2, 3, 4, 5, 6]);
        }
        every_prefix_replays(&checkout(), &run);
    }
}

/// The authorize's outcome is unknown (its last attempt failed
/// retryably); the void meets a provider still down for 40 attempts, far
/// more than the compensation policy's 4. With the step's settle window
/// (the provider's search lag, 60 s) it keeps trying through them and the
/// saga ends compensated (defect 3); without it, it parks after 4.
#[test]
fn a_void_keeps_trying_through_failures_until_its_settle_window_has_passed() {
    let mut settling = checkout();
    settling.steps[1].settle_ms = Some(60_000);
    for (def, end) in [
        (settling, SagaStatus::Compensated),
        (
            checkout(),
            SagaStatus::Parked {
                reason: String::new(),
            },
        ),
    ] {
        let mut voids = 0;
        let run = drive(
            &def,
            |c| match c.activity.as_str() {
                "payment.authorize" => Err(unavailable()),
                "payment.void" if voids < 40 => {
                    voids += 1;
                    Err(unavailable())
                }
                _ => ok(c),
            },
            &[],
        );
        let status = run.end.clone().unwrap();
        assert_eq!(
            std::mem::discriminant(&status),
            std::mem::discriminant(&end),
            "{status:?}"
        );
        let voided = attempts_of(&run, "payment.void");
        if end == SagaStatus::Compensated {
            assert_eq!(voided.len(), 41);
        } else {
            assert_eq!(voided, [1, 2, 3, 4]);
        }
        every_prefix_replays(&def, &run);
    }
}

/// Past its settle window a void's attempts count again: a provider down
/// for good parks the saga after the window and the policy's attempts,
/// not before the window is over.
#[test]
fn past_the_settle_window_the_policy_counts_again() {
    let mut def = checkout();
    def.steps[1].settle_ms = Some(20_000);
    let run = drive(
        &def,
        |c| match c.activity.as_str() {
            "payment.authorize" | "payment.void" => Err(unavailable()),
            _ => ok(c),
        },
        &[],
    );
    assert!(
        matches!(run.end, Some(SagaStatus::Parked { .. })),
        "{:?}",
        run.end
    );
    let voided = attempts_of(&run, "payment.void").len();
    let authorize_delays = 4;
    let waited: u64 = run.delays[authorize_delays..].iter().sum();
    assert!(
        waited >= 20_000,
        "parked after {waited} ms, within the window"
    );
    assert!(voided > 4 + 18, "{voided} void attempts");
    every_prefix_replays(&def, &run);
}

/// A `Retry-After` longer than the policy's backoff is the wait before
/// the next attempt, capped by the step's `max_wait`.
#[test]
fn retry_after_lengthens_the_wait_before_the_next_attempt() {
    for (max_wait, expected) in [(None, 30_000), (Some(10_000), 10_000)] {
        let mut def = checkout();
        def.steps[1].max_wait_ms = max_wait;
        let mut first = true;
        let run = drive(
            &def,
            |c| match c.activity.as_str() {
                "payment.authorize" if std::mem::take(&mut first) => Err(ActivityError {
                    retry_after_ms: Some(30_000),
                    ..ActivityError::retryable("http_429", "slow down")
                }),
                _ => ok(c),
            },
            &[],
        );
        assert_eq!(run.end, Some(SagaStatus::Completed));
        assert_eq!(run.delays, [expected]);
        every_prefix_replays(&def, &run);
    }
}
