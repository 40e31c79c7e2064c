//! The saga interpreter as "history in, decisions out", with no runtime:
//! a scripted provider answers each activity call, timers fire at once.

use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, Finished, Phase, ReplayContext, Resolution,
    SagaStatus, Signal, Stage, Work,
};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

mod common;
use common::checkout;
use common::drive::*;

#[test]
fn happy_path_runs_every_step_once_in_order() {
    let run = drive(&checkout(), ok, &[]);
    assert_eq!(
        names(&run),
        [
            "stock.reserve",
            "payment.authorize",
            "orders.create",
            "payment.capture",
            "stock.commit"
        ]
    );
    assert_eq!(run.end, Some(SagaStatus::Completed));
    assert!(run.delays.is_empty());
}

#[test]
fn compensation_runs_in_reverse_order() {
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "orders.create" => Err(ActivityError::business("order_rejected", "no")),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(
        names(&run),
        [
            "stock.reserve",
            "payment.authorize",
            "orders.create",
            "undo:payment.void",
            "undo:stock.release"
        ],
        "a business failure means the step did not happen: only earlier steps are undone, last first"
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    assert_eq!(
        run.statuses,
        [SagaStatus::Compensating, SagaStatus::Compensated]
    );
}

#[test]
fn compensation_input_carries_earlier_outputs() {
    let mut void_input = None;
    drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "orders.create" => Err(ActivityError::business("order_rejected", "no")),
            "payment.void" => {
                void_input = Some(c.input.clone());
                assert_eq!(c.idempotency_key, "saga-1/authorize_payment/compensate");
                assert_eq!(c.step, "authorize_payment");
                Ok(json!({}))
            }
            _ => ok(c),
        },
        &[],
    );
    let input = void_input.expect("void ran");
    assert_eq!(
        input["outputs"]["authorize_payment"]["payment_intent"],
        "pi_1"
    );
}

#[test]
fn non_retryable_failure_compensates_at_once() {
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "payment.authorize" => Err(ActivityError::retryable("card_declined", "declined")),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(
        names(&run),
        ["stock.reserve", "payment.authorize", "undo:stock.release"]
    );
    assert!(run.delays.is_empty(), "a non_retryable kind is not retried");
    assert_eq!(run.end, Some(SagaStatus::Compensated));
}

#[test]
fn business_failure_of_the_first_step_ends_without_compensation() {
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "stock.reserve" => Err(ActivityError::business("out_of_stock", "none")),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(names(&run), ["stock.reserve"]);
    assert_eq!(run.end, Some(SagaStatus::Compensated));
}

/// A compensation that may find nothing to undo (a void searching for an
/// authorization whose answer was lost) learns when the step's outcome
/// became unknown, so it can give the provider's search time to catch up;
/// the compensations of steps that reported success do not get it.
#[test]
fn the_compensation_of_a_step_with_an_unknown_outcome_learns_since_when() {
    let mut seen: Vec<(String, Option<Value>)> = Vec::new();
    let run = drive(
        &checkout(),
        |c| {
            if c.phase == Phase::Compensation {
                seen.push((c.activity.clone(), c.input.get("unknown_since_ms").cloned()));
            }
            match c.activity.as_str() {
                "orders.create" => Err(ActivityError::retryable("timeout", "no answer")),
                _ => ok(c),
            }
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    let since = |activity: &str| {
        seen.iter()
            .find(|(a, _)| a == activity)
            .unwrap_or_else(|| panic!("{activity} not called: {seen:?}"))
            .1
            .clone()
    };
    let cancel = since("orders.cancel").expect("the ambiguous step's undo gets unknown_since_ms");
    // The saga's own clock, which starts at 1,000 ms here.
    assert!(cancel.as_u64().is_some_and(|ms| ms >= 1_000), "{cancel}");
    assert_eq!(since("payment.void"), None);
    assert_eq!(since("stock.release"), None);
}

#[test]
fn retry_exhaustion_compensates_including_the_ambiguous_step() {
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "orders.create" => Err(ActivityError::retryable("timeout", "no answer")),
            _ => ok(c),
        },
        &[],
    );
    let creates: Vec<u32> = run
        .calls
        .iter()
        .filter(|(a, _, _)| a == "orders.create")
        .map(|(_, _, n)| *n)
        .collect();
    assert_eq!(creates, [1, 2, 3, 4, 5]);
    assert_eq!(run.delays.len(), 4);
    assert!(
        run.delays.windows(2).all(|w| w[0] <= w[1] * 2),
        "{:?}",
        run.delays
    );
    assert!(
        run.delays.iter().all(|d| *d >= 80 && *d <= 1_000),
        "{:?}",
        run.delays
    );
    assert_eq!(
        names(&run)[7..],
        [
            "undo:orders.cancel",
            "undo:payment.void",
            "undo:stock.release"
        ],
        "a timed-out step may have happened, so it is undone too"
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
}

#[test]
fn compensation_failure_parks_then_retry_signal_finishes() {
    let mut void_calls = 0;
    let mut answer = |c: &ActivityCall| match c.activity.as_str() {
        "orders.create" => Err(ActivityError::business("order_rejected", "no")),
        "payment.void" => {
            void_calls += 1;
            if void_calls <= 4 {
                Err(ActivityError::retryable("http_500", "provider down"))
            } else {
                Ok(json!({}))
            }
        }
        _ => ok(c),
    };
    let parked = drive(&checkout(), &mut answer, &[]);
    match &parked.end {
        Some(SagaStatus::Parked { reason }) => {
            assert!(reason.contains("compensation of step authorize_payment (payment.void) failed after 4 attempt(s)"), "{reason}");
            assert!(reason.contains("`sagaflow retry`"), "{reason}");
        }
        other => panic!("expected parked, got {other:?}"),
    }
    assert!(
        !names(&parked).contains(&"undo:stock.release".to_string()),
        "stops at the failing compensation"
    );

    void_calls = 0;
    let mut answer = |c: &ActivityCall| match c.activity.as_str() {
        "orders.create" => Err(ActivityError::business("order_rejected", "no")),
        "payment.void" => {
            void_calls += 1;
            if void_calls <= 4 {
                Err(ActivityError::retryable("http_500", "provider down"))
            } else {
                Ok(json!({}))
            }
        }
        _ => ok(c),
    };
    let resumed = drive(&checkout(), &mut answer, &[Signal::Retry]);
    assert_eq!(resumed.end, Some(SagaStatus::Compensated));
    let voids: Vec<u32> = resumed
        .calls
        .iter()
        .filter(|(a, _, _)| a == "payment.void")
        .map(|(_, _, n)| *n)
        .collect();
    assert_eq!(
        voids,
        [1, 2, 3, 4, 5],
        "attempt numbers continue after the operator's retry"
    );
    assert_eq!(names(&resumed).last().unwrap(), "undo:stock.release");
}

#[test]
fn steps_after_the_pivot_only_go_forward() {
    let mut commits = 0;
    let mut answer = |c: &ActivityCall| match c.activity.as_str() {
        "stock.commit" => {
            commits += 1;
            if commits == 1 {
                Err(ActivityError::business("reservation_expired", "sold out"))
            } else {
                Ok(json!({}))
            }
        }
        _ => ok(c),
    };
    let run = drive(&checkout(), &mut answer, &[Signal::Retry]);
    assert!(
        run.calls.iter().all(|(_, p, _)| *p == Phase::Action),
        "nothing is compensated after the pivot: {:?}",
        names(&run)
    );
    assert!(
        matches!(&run.statuses[0], SagaStatus::Parked { reason } if reason.contains("past the pivot"))
    );
    assert_eq!(run.end, Some(SagaStatus::Completed));
    assert_eq!(run.signals.len(), 1, "the operator's retry resumes it");
}

#[test]
fn pivot_failure_compensates_everything_before_it() {
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "payment.capture" => Err(ActivityError::business("authorization_expired", "too late")),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(
        names(&run)[4..],
        [
            "undo:orders.cancel",
            "undo:payment.void",
            "undo:stock.release"
        ]
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
}

#[test]
fn same_history_same_decisions() {
    let flaky = |c: &ActivityCall| match (c.activity.as_str(), c.attempt) {
        ("payment.authorize", 1 | 2) => Err(ActivityError::retryable("http_503", "busy")),
        ("orders.create", _) => Err(ActivityError::retryable("timeout", "slow")),
        ("payment.void", 1) => Err(ActivityError::retryable("network", "reset")),
        _ => ok(c),
    };
    let first = drive(&checkout(), flaky, &[]);
    let second = drive(&checkout(), flaky, &[]);
    assert_eq!(first.calls, second.calls);
    assert_eq!(first.delays, second.delays);
    assert_eq!(first.history, second.history);

    // The whole history replays to the same end with nothing left to do.
    let (done, commands, _) = replay(&checkout(), &first.history);
    assert_eq!(done, first.end);
    assert!(commands.is_empty(), "{commands:?}");

    // Every prefix replays to exactly the next operation the live run issued.
    for cut in 0..first.history.len() {
        let (done, commands, _) = replay(&checkout(), &first.history[..cut]);
        assert_eq!(done, None);
        assert_eq!(
            commands.len(),
            1,
            "one operation outstanding after {cut} events"
        );
        let Event::Resolved(next_seq, next) = &first.history[cut] else {
            panic!("no signals in this run");
        };
        match (&commands[0], next) {
            (Command::Activity { seq, call }, Resolution::Activity { activity, .. }) => {
                assert_eq!((seq, &call.activity), (next_seq, activity));
            }
            (Command::Timer { seq, fire_at_ms }, Resolution::Timer { at_ms }) => {
                assert_eq!(
                    (seq, fire_at_ms),
                    (next_seq, at_ms),
                    "timer deadlines replay exactly"
                );
            }
            other => panic!("replay diverged at {cut}: {other:?}"),
        }
    }
}

#[test]
fn parked_saga_replays_parked_and_resumes_with_its_signal() {
    let answer = |c: &ActivityCall| match c.activity.as_str() {
        "stock.commit" => Err(ActivityError::business("reservation_expired", "sold out")),
        _ => ok(c),
    };
    let run = drive(&checkout(), answer, &[]);
    let (done, commands, status) = replay(&checkout(), &run.history);
    assert_eq!(done, None);
    assert_eq!(commands, [Command::WaitSignal]);
    assert_eq!(Some(status), run.end);
    // With the retry signal recorded, it asks for the step again.
    let mut with_retry = run.history.clone();
    with_retry.push(Event::Signalled(Signal::Retry, 99_999));
    let (_, commands, status) = replay(&checkout(), &with_retry);
    assert_eq!(status, SagaStatus::Running);
    assert!(
        matches!(&commands[0], Command::Activity { call, .. } if call.activity == "stock.commit" && call.attempt == 2)
    );
}

#[test]
fn a_history_from_another_definition_is_reported_not_followed() {
    let run = drive(&checkout(), ok, &[]);
    let mut other = checkout();
    other.steps[1].action = "payment.authorize_v2".into();
    let ctx = ReplayContext::new("saga-1", 1_000);
    for event in &run.history {
        if let Event::Resolved(seq, r) = event {
            ctx.resolve(*seq, r.clone());
        }
    }
    let order = json!({});
    let mut fut = pin!(run_saga(&ctx, &other, &order));
    assert!(fut
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    let why = ctx.divergence().expect("divergence reported");
    assert!(why.contains("payment.authorize_v2"), "{why}");
}

/// Replayed one event at a time (as recovery does), the result arrives
/// after the saga asked: `resolve` checks it against the command it
/// withdraws.
#[test]
fn a_history_from_another_definition_is_reported_event_by_event() {
    let run = drive(&checkout(), ok, &[]);
    let mut other = checkout();
    other.steps[1].action = "payment.authorize_v2".into();
    let ctx = ReplayContext::new("saga-1", 1_000);
    let order = json!({});
    let mut fut = pin!(run_saga(&ctx, &other, &order));
    let mut poll = || {
        fut.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    };
    assert!(poll());
    for event in &run.history {
        if let Event::Resolved(seq, r) = event {
            ctx.resolve(*seq, r.clone());
        }
        assert!(poll(), "a diverged saga never ends");
        if ctx.divergence().is_some() {
            break;
        }
    }
    let why = ctx.divergence().expect("divergence reported");
    assert!(
        why.contains("payment.authorize but the saga asks for payment.authorize_v2"),
        "{why}"
    );
}

#[test]
fn retry_applies_only_to_a_parked_saga() {
    let parked = SagaStatus::Parked {
        reason: "compensation failed".into(),
    };
    let stage = Stage::default();
    assert_eq!(
        Signal::Retry.applies_to(&parked, &stage, &checkout().steps),
        Ok(())
    );
    let running = Signal::Retry
        .applies_to(&SagaStatus::Running, &stage, &checkout().steps)
        .unwrap_err();
    assert!(
        running.starts_with("retry applies only to a parked saga, and this one is running; it is still trying on its own"),
        "{running}"
    );
    let ended = Signal::Retry
        .applies_to(&SagaStatus::Completed, &stage, &checkout().steps)
        .unwrap_err();
    assert!(
        ended.contains("it has ended, nothing is left to retry"),
        "{ended}"
    );
}

/// The interrupt that cancels at the first command for which `when` holds,
/// checking first that the stage says a cancel applies there.
fn cancel_when(
    mut when: impl FnMut(&Command) -> bool,
) -> impl FnMut(&Command, &Stage) -> Option<Signal> {
    let mut sent = false;
    move |c, stage| {
        if sent || !when(c) {
            return None;
        }
        sent = true;
        assert_eq!(
            Signal::Cancel.applies_to(&SagaStatus::Running, stage, &checkout().steps),
            Ok(()),
            "cancel applies at {c:?} ({stage:?})"
        );
        Some(Signal::Cancel)
    }
}

fn is_activity(c: &Command, name: &str) -> bool {
    matches!(c, Command::Activity { call, .. } if call.activity == name)
}

#[test]
fn cancel_while_waiting_to_retry_compensates_at_once_including_that_step() {
    let busy = |c: &ActivityCall| match c.activity.as_str() {
        "payment.authorize" => Err(ActivityError::retryable("http_503", "busy")),
        _ => ok(c),
    };
    let run = drive_with(
        &checkout(),
        busy,
        &[],
        cancel_when(|c| matches!(c, Command::Timer { .. })),
    );
    assert_eq!(
        names(&run),
        [
            "stock.reserve",
            "payment.authorize",
            // Its outcome is unknown (a retryable failure): voided too.
            "undo:payment.void",
            "undo:stock.release"
        ]
    );
    assert!(run.delays.is_empty(), "the timer never fired");
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    every_prefix_replays(&checkout(), &run);
}

#[test]
fn cancel_during_a_step_lets_it_finish_then_compensates_it_with_the_others() {
    let run = drive_with(
        &checkout(),
        ok,
        &[],
        cancel_when(|c| is_activity(c, "orders.create")),
    );
    assert_eq!(
        names(&run),
        [
            "stock.reserve",
            "payment.authorize",
            "orders.create",
            "undo:orders.cancel",
            "undo:payment.void",
            "undo:stock.release"
        ]
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    every_prefix_replays(&checkout(), &run);
}

#[test]
fn cancel_applies_up_to_the_pivot_and_names_refund_after_it() {
    // Capture fails once (retryable), then succeeds; commit fails for good.
    let mut captures = 0;
    let answer = |c: &ActivityCall| match c.activity.as_str() {
        "payment.capture" => {
            captures += 1;
            if captures == 1 {
                Err(ActivityError::retryable("http_503", "busy"))
            } else {
                ok(c)
            }
        }
        "stock.commit" => Err(ActivityError::business("reservation_expired", "gone")),
        _ => ok(c),
    };
    let mut seen = Vec::new();
    let run = drive_with(&checkout(), answer, &[], |c, stage| {
        let verdict = Signal::Cancel.applies_to(&SagaStatus::Running, stage, &checkout().steps);
        let what = match c {
            Command::Activity { call, .. } => call.activity.clone(),
            Command::Timer { .. } => {
                format!("timer in {}", stage.step_name(&checkout().steps).unwrap())
            }
            Command::WaitSignal => unreachable!(),
        };
        seen.push((what, verdict.is_ok()));
        if let Err(why) = verdict {
            assert!(why.contains("sagaflow refund"), "{why}");
        }
        None
    });
    assert_eq!(
        seen,
        [
            ("stock.reserve".to_string(), true),
            ("payment.authorize".to_string(), true),
            ("orders.create".to_string(), true),
            // The pivot's attempt may succeed: no going back from there.
            ("payment.capture".to_string(), false),
            // Waiting to retry it, nothing has passed the pivot yet.
            ("timer in capture_payment".to_string(), true),
            ("payment.capture".to_string(), false),
            ("stock.commit".to_string(), false),
        ]
    );
    let parked = SagaStatus::Parked {
        reason: "commit failed".into(),
    };
    let stage = Stage {
        step: Some(4),
        phase: Some(Phase::Action),
        cancellable: false,
    };
    let why = Signal::Cancel
        .applies_to(&parked, &stage, &checkout().steps)
        .unwrap_err();
    assert!(
        why.contains("past its pivot") && why.contains("sagaflow refund"),
        "{why}"
    );
    assert!(matches!(run.end, Some(SagaStatus::Parked { .. })));
}

#[test]
fn resolve_records_a_parked_step_as_done_with_the_operator_output() {
    let answer = |c: &ActivityCall| match c.activity.as_str() {
        "stock.commit" => Err(ActivityError::business("reservation_expired", "gone")),
        _ => ok(c),
    };
    let resolve = |step: &str| Signal::Resolve {
        step: step.into(),
        output: json!({"committed_by": "hand"}),
    };
    // A resolve naming another step does not apply and is not taken.
    let parked = drive(&checkout(), answer, &[resolve("capture_payment")]);
    assert!(matches!(parked.end, Some(SagaStatus::Parked { .. })));
    assert_eq!(names(&parked).last().unwrap(), "stock.commit");
    let run = drive(&checkout(), answer, &[resolve("commit_stock")]);
    assert_eq!(run.end, Some(SagaStatus::Completed));
    assert_eq!(
        names(&run).iter().filter(|n| *n == "stock.commit").count(),
        1,
        "not run again"
    );
    every_prefix_replays(&checkout(), &run);
    let stage = Stage {
        step: Some(4),
        phase: Some(Phase::Action),
        cancellable: false,
    };
    let status = parked.end.clone().unwrap();
    assert_eq!(
        resolve("commit_stock").applies_to(&status, &stage, &checkout().steps),
        Ok(())
    );
    let why = resolve("capture_payment")
        .applies_to(&status, &stage, &checkout().steps)
        .unwrap_err();
    assert!(why.contains("pass --step commit_stock"), "{why}");
    let why = resolve("commit_stock")
        .applies_to(&SagaStatus::Running, &stage, &checkout().steps)
        .unwrap_err();
    assert!(why.contains("only to a parked saga"), "{why}");
}

#[test]
fn resolve_of_a_parked_compensation_goes_on_compensating() {
    let answer = |c: &ActivityCall| match c.activity.as_str() {
        "orders.create" => Err(ActivityError::business("rejected", "no")),
        "payment.void" => Err(ActivityError::retryable("http_500", "down")),
        _ => ok(c),
    };
    let resolve = Signal::Resolve {
        step: "authorize_payment".into(),
        output: json!({}),
    };
    let run = drive(&checkout(), answer, &[resolve]);
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    let voids = names(&run)
        .iter()
        .filter(|n| *n == "undo:payment.void")
        .count();
    assert_eq!(voids, 4, "the policy's attempts, none after the resolve");
    assert_eq!(names(&run).last().unwrap(), "undo:stock.release");
    let compensating = Stage {
        step: Some(1),
        phase: Some(Phase::Compensation),
        cancellable: false,
    };
    let why = Signal::Cancel
        .applies_to(&SagaStatus::Compensating, &compensating, &checkout().steps)
        .unwrap_err();
    assert!(why.contains("already compensating"), "{why}");
}

/// Generated histories: whatever the activities answer (success, a
/// retryable failure, a business failure) and whatever operator commands
/// arrive while the saga is parked, the saga ends completed, compensated
/// or parked, and every prefix of its history replays to the decision the
/// live run took next.
mod generated {
    use super::*;
    use proptest::prelude::*;

    const STEPS: [&str; 5] = [
        "reserve_stock",
        "authorize_payment",
        "create_order",
        "capture_payment",
        "commit_stock",
    ];

    fn signal() -> impl Strategy<Value = Signal> {
        prop_oneof![
            Just(Signal::Retry),
            Just(Signal::Cancel),
            (0..STEPS.len()).prop_map(|i| Signal::Resolve {
                step: STEPS[i].into(),
                output: json!({"by": "hand"}),
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn every_prefix_of_a_generated_history_replays_to_the_same_decisions(
            answers in prop::collection::vec(0u8..5, 0..60),
            signals in prop::collection::vec(signal(), 0..5),
        ) {
            let mut next = answers.into_iter();
            let run = drive(
                &checkout(),
                |c| match next.next().unwrap_or(0) {
                    0 | 1 => ok(c),
                    2 | 3 => Err(ActivityError::retryable("http_503", "busy")),
                    _ => Err(ActivityError::business("card_declined", "declined")),
                },
                &signals,
            );
            prop_assert!(
                matches!(
                    run.end,
                    Some(SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Parked { .. })
                ),
                "{:?}",
                run.end
            );
            every_prefix_replays(&checkout(), &run);
        }
    }
}

/// A refusal by an open breaker is not an attempt: the saga waits about as
/// long as the breaker says (spread by at most a fifth), as many times as
/// it takes within `max_wait`, and the attempt number does not move.
#[test]
fn breaker_refusals_wait_without_spending_attempts() {
    let mut refusals = 0;
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "payment.authorize" if refusals < 20 => {
                refusals += 1;
                Err(refused("payment", 3_000))
            }
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Completed));
    assert_eq!(run.delays.len(), 20, "one durable wait per refusal");
    assert!(
        run.delays.iter().all(|d| (3_000..=3_600).contains(d)),
        "{:?}",
        run.delays
    );
    assert!(
        run.delays.windows(2).any(|w| w[0] != w[1]),
        "waits are spread per refusal: {:?}",
        run.delays
    );
    let authorize = attempts_of(&run, "payment.authorize");
    assert_eq!(
        authorize,
        vec![1; 21],
        "20 refusals and the attempt that ran"
    );
}

/// An attempt that was made and failed while the breaker is open (a
/// failed probe, the failure that opened it) waits like a refusal and is
/// not counted: a saga that probes in every open interval of a long
/// outage does not run out of attempts. It keeps its own number.
#[test]
fn failed_probes_wait_and_are_numbered_but_not_counted() {
    let mut probes = 0;
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "payment.authorize" if probes < 8 => {
                probes += 1;
                let mut failed = ActivityError::retryable("http_503", "unavailable");
                failed.wait = refused("payment", 5_000).wait;
                Err(failed)
            }
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(
        run.end,
        Some(SagaStatus::Completed),
        "8 failed probes exceed the policy's 5 attempts, but were not counted"
    );
    assert_eq!(
        attempts_of(&run, "payment.authorize"),
        (1..=9).collect::<Vec<u32>>()
    );
    assert!(
        run.delays.iter().all(|d| (5_000..=6_000).contains(d)),
        "the breaker's waits, not the policy's backoff: {:?}",
        run.delays
    );
}

/// After `max_wait` of refusals the step's own policy counts them: the
/// saga compensates as it would for any retryable failure, having waited
/// no longer than `max_wait` for the breaker.
#[test]
fn max_wait_bounds_the_wait_then_refusals_count_as_attempts() {
    let mut def = checkout();
    def.steps[1].max_wait_ms = Some(10_000);
    let run = drive(
        &def,
        |c| match c.activity.as_str() {
            "payment.authorize" => Err(refused("payment", 3_000)),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    let authorize = attempts_of(&run, "payment.authorize");
    let waits = authorize.len() - 5;
    assert_eq!(&authorize[waits..], [1, 2, 3, 4, 5]);
    let waited: u64 = run.delays[..waits].iter().sum();
    assert!(
        (7_000..=10_000).contains(&waited),
        "waited {waited} ms for a 10 s max_wait, never past it: {:?}",
        run.delays
    );
    assert!(
        names(&run).contains(&"undo:payment.void".to_owned()),
        "a refused authorization counted as retryable: its void runs"
    );
}

/// `max_wait = "0s"`: the step never waits, a refusal is a failed attempt.
#[test]
fn max_wait_zero_counts_a_refusal_at_once() {
    let mut def = checkout();
    def.steps[1].max_wait_ms = Some(0);
    let run = drive(
        &def,
        |c| match c.activity.as_str() {
            "payment.authorize" => Err(refused("payment", 3_000)),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    assert_eq!(run.delays.len(), 4, "the policy's four backoffs only");
    assert!(run.delays.iter().all(|d| *d <= 1_000), "{:?}", run.delays);
}

/// A compensation refused by an open breaker waits too, instead of
/// spending the compensation policy and parking.
#[test]
fn compensations_wait_for_the_breaker_instead_of_parking() {
    let mut refusals = 0;
    let run = drive(
        &checkout(),
        |c| match c.activity.as_str() {
            "orders.create" => Err(ActivityError::business("order_rejected", "no")),
            "payment.void" if refusals < 12 => {
                refusals += 1;
                Err(refused("payment", 5_000))
            }
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    assert!(
        !run.statuses
            .iter()
            .any(|s| matches!(s, SagaStatus::Parked { .. })),
        "12 refusals exceed the compensation policy's 4 attempts, but were not attempts"
    );
}

/// A cancel reaches a saga waiting for a breaker before its pivot: it
/// stops waiting and compensates, the refused step included (its outcome
/// is as unknown as after any retryable failure).
#[test]
fn a_cancel_ends_a_breaker_wait_before_the_pivot() {
    let run = drive_with(
        &checkout(),
        |c| match c.activity.as_str() {
            "payment.authorize" => Err(refused("payment", 3_000)),
            _ => ok(c),
        },
        &[],
        |c, stage| match c {
            Command::Timer { .. } if stage.cancellable => Some(Signal::Cancel),
            _ => None,
        },
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    assert_eq!(
        names(&run),
        [
            "stock.reserve",
            "payment.authorize",
            "undo:payment.void",
            "undo:stock.release"
        ]
    );
}

/// One report as a line: what, which run or attempt, how it ended.
fn described(f: &Finished) -> String {
    match &f.work {
        Work::Saga { status } => format!("saga {status}"),
        Work::Step {
            step,
            phase,
            first_attempt,
            outcome,
            ..
        } => format!("{} {step} from #{first_attempt}: {outcome}", phase.name()),
        Work::Attempt {
            step,
            phase,
            attempt,
            error,
            ..
        } => format!(
            "{} {step} #{attempt}: {}",
            phase.name(),
            error.as_ref().map_or("ok", |e| e.kind.as_str())
        ),
    }
}

#[test]
fn ended_work_is_reported_attempt_by_attempt_run_by_run_then_the_saga() {
    let mut failed_once = false;
    let run = drive(
        &checkout(),
        |call| match call.activity.as_str() {
            "payment.authorize" if !failed_once => {
                failed_once = true;
                Err(ActivityError::retryable("provider_unavailable", "503"))
            }
            "orders.create" => Err(ActivityError::business("conflict", "the order exists")),
            _ => ok(call),
        },
        &[],
    );
    assert_eq!(run.end, Some(SagaStatus::Compensated));
    let lines: Vec<String> = run.finished.iter().map(described).collect();
    assert_eq!(
        lines,
        [
            "action reserve_stock #1: ok",
            "action reserve_stock from #1: completed",
            "action authorize_payment #1: provider_unavailable",
            "action authorize_payment #2: ok",
            "action authorize_payment from #1: completed",
            "action create_order #1: conflict",
            "action create_order from #1: failed",
            "compensation authorize_payment #1: ok",
            "compensation authorize_payment from #1: completed",
            "compensation reserve_stock #1: ok",
            "compensation reserve_stock from #1: completed",
            "saga compensated",
        ]
    );
    let saga = run.finished.last().unwrap();
    assert_eq!(
        (saga.saga_id.as_str(), saga.saga.as_str()),
        ("saga-1", "checkout")
    );
    assert_eq!(saga.started_ms, 1_000, "the saga's own start");
    assert_eq!(saga.traceparent, None);
    // Saga times nest: each attempt within its run, each run within the
    // saga; the retry began after the first attempt ended (a timer).
    for f in &run.finished {
        assert!(f.started_ms <= f.ended_ms, "{f:?}");
        assert!(saga.started_ms <= f.started_ms && f.ended_ms <= saga.ended_ms);
        if let Work::Attempt {
            key, first_attempt, ..
        } = &f.work
        {
            let run_of = run
                .finished
                .iter()
                .find(|r| {
                    matches!(&r.work, Work::Step { key: k, first_attempt: n, .. } if k == key && n == first_attempt)
                })
                .unwrap_or_else(|| panic!("no run for {f:?}"));
            assert!(run_of.started_ms <= f.started_ms && f.ended_ms <= run_of.ended_ms);
        }
    }
    let authorize: Vec<&Finished> = run
        .finished
        .iter()
        .filter(|f| {
            matches!(&f.work, Work::Attempt { step, phase: Phase::Action, .. } if step == "authorize_payment")
        })
        .collect();
    assert!(authorize[1].started_ms > authorize[0].ended_ms);
    assert!(matches!(
        &run.finished[7].work,
        Work::Attempt { key, .. } if key == "saga-1/authorize_payment/compensate"
    ));
}

#[test]
fn a_retried_parked_step_is_reported_as_a_second_run() {
    let mut calls = 0;
    let run = drive(
        &checkout(),
        |call| match call.activity.as_str() {
            "stock.commit" => {
                calls += 1;
                if calls <= 3 {
                    Err(ActivityError::retryable("provider_unavailable", "503"))
                } else {
                    ok(call)
                }
            }
            _ => ok(call),
        },
        &[Signal::Retry],
    );
    assert_eq!(run.end, Some(SagaStatus::Completed));
    let runs: Vec<String> = run
        .finished
        .iter()
        .filter(|f| matches!(&f.work, Work::Step { step, .. } if step == "commit_stock"))
        .map(described)
        .collect();
    assert_eq!(
        runs,
        [
            "action commit_stock from #1: failed",
            "action commit_stock from #4: completed"
        ]
    );
}

#[test]
fn nothing_is_reported_unless_the_engine_traces() {
    let ctx = ReplayContext::new("saga-1", 1_000);
    let order = json!({"order_id": "saga-1"});
    let def = checkout();
    let mut fut = pin!(run_saga(&ctx, &def, &order));
    let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    let Some(Command::Activity { seq, call }) = ctx.take_commands().pop() else {
        panic!("the first step is asked for");
    };
    ctx.resolve(
        seq,
        Resolution::Activity {
            activity: call.activity,
            result: Ok(json!({})),
            at_ms: 1_001,
        },
    );
    let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    let mut reported = 0;
    ctx.take_finished(|_| reported += 1);
    assert_eq!(reported, 0);
}
