//! The saga interpreter as "history in, decisions out", with no runtime:
//! a scripted provider answers each activity call, timers fire at once.

use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, Phase, ReplayContext, Resolution, RetryPolicy,
    SagaDef, SagaStatus, Signal, StepDef,
};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

fn policy(max_attempts: u32, non_retryable: &[&str]) -> RetryPolicy {
    RetryPolicy {
        initial_interval_ms: 100,
        backoff_coefficient: 2.0,
        max_interval_ms: 1_000,
        max_attempts,
        non_retryable: non_retryable.iter().map(|s| s.to_string()).collect(),
        jitter: 0.2,
    }
}

fn step(name: &str, action: &str, compensation: Option<&str>, retry: RetryPolicy) -> StepDef {
    StepDef {
        name: name.into(),
        action: action.into(),
        compensation: compensation.map(Into::into),
        timeout_ms: 1_000,
        compensation_timeout_ms: None,
        retry,
    }
}

/// The checkout saga as sagas.toml defines it.
fn checkout() -> SagaDef {
    SagaDef {
        name: "checkout".into(),
        steps: vec![
            step(
                "reserve_stock",
                "stock.reserve",
                Some("stock.release"),
                policy(5, &["out_of_stock"]),
            ),
            step(
                "authorize_payment",
                "payment.authorize",
                Some("payment.void"),
                policy(5, &["card_declined"]),
            ),
            step(
                "create_order",
                "orders.create",
                Some("orders.cancel"),
                policy(5, &[]),
            ),
            step("capture_payment", "payment.capture", None, policy(5, &[])),
            step("commit_stock", "stock.commit", None, policy(3, &[])),
        ],
        pivot: Some(3),
        compensation_retry: policy(4, &[]),
    }
}

#[derive(Debug, Default)]
struct Run {
    /// (activity, phase, attempt) in the order they were asked for.
    calls: Vec<(String, Phase, u32)>,
    /// Every timer delay asked for.
    delays: Vec<u64>,
    /// Every resolution fed in, by operation sequence number.
    history: Vec<(u32, Resolution)>,
    /// Signals delivered, with the time.
    signals: Vec<(Signal, u64)>,
    /// Status changes, in order.
    statuses: Vec<SagaStatus>,
    /// The final status (terminal, or where it stopped).
    end: Option<SagaStatus>,
}

/// Drives the saga: each activity call is answered by `answer`, each timer
/// fires at its deadline, each signal wait takes the next of `signals`
/// (stopping when there are none: the saga stays parked).
fn drive(
    def: &SagaDef,
    mut answer: impl FnMut(&ActivityCall) -> Result<Value, ActivityError>,
    signals: &[Signal],
) -> Run {
    let ctx = ReplayContext::new("saga-1", 1_000);
    let order = json!({"order_id": "saga-1"});
    let mut fut = pin!(run_saga(&ctx, def, &order));
    let mut cx = Context::from_waker(Waker::noop());
    let mut run = Run::default();
    let mut signals = signals.iter();
    let mut clock = 1_000;
    loop {
        let poll = fut.as_mut().poll(&mut cx);
        if let Some(s) = ctx.take_status_change() {
            run.statuses.push(s);
        }
        assert_eq!(ctx.divergence(), None);
        if let Poll::Ready(outcome) = poll {
            run.end = Some(outcome.status);
            return run;
        }
        let commands = ctx.take_commands();
        assert!(
            !commands.is_empty(),
            "a pending saga must be waiting on something"
        );
        for c in commands {
            match c {
                Command::Activity { seq, call } => {
                    run.calls
                        .push((call.activity.clone(), call.phase, call.attempt));
                    assert!(call.idempotency_key.starts_with("saga-1/"));
                    assert_eq!(call.input["saga_id"], "saga-1");
                    clock += 1;
                    let r = Resolution::Activity {
                        activity: call.activity.clone(),
                        result: answer(&call),
                        at_ms: clock,
                    };
                    run.history.push((seq, r.clone()));
                    ctx.resolve(seq, r);
                }
                Command::Timer { seq, fire_at_ms } => {
                    run.delays.push(fire_at_ms - clock);
                    clock = fire_at_ms;
                    let r = Resolution::Timer { at_ms: fire_at_ms };
                    run.history.push((seq, r.clone()));
                    ctx.resolve(seq, r);
                }
                Command::WaitSignal => match signals.next() {
                    Some(s) => {
                        clock += 1;
                        run.signals.push((*s, clock));
                        ctx.push_signal(*s, clock);
                    }
                    None => {
                        run.end = Some(ctx.status());
                        return run;
                    }
                },
            }
        }
    }
}

fn ok(call: &ActivityCall) -> Result<Value, ActivityError> {
    Ok(match call.activity.as_str() {
        "payment.authorize" => json!({"kind": "authorization", "payment_intent": "pi_1"}),
        _ => json!({}),
    })
}

fn names(run: &Run) -> Vec<String> {
    run.calls
        .iter()
        .map(|(a, p, _)| match p {
            Phase::Action => a.clone(),
            Phase::Compensation => format!("undo:{a}"),
        })
        .collect()
}

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
            assert!(reason.contains("signal retry"), "{reason}");
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

/// Feeds a recorded history into a fresh context in one go, polls once, and
/// returns the status and the commands the saga asks for.
fn replay(
    def: &SagaDef,
    history: &[(u32, Resolution)],
    signals: &[(Signal, u64)],
) -> (Option<SagaStatus>, Vec<Command>, SagaStatus) {
    let ctx = ReplayContext::new("saga-1", 1_000);
    for (seq, r) in history {
        ctx.resolve(*seq, r.clone());
    }
    for (s, at) in signals {
        ctx.push_signal(*s, *at);
    }
    let order = json!({"order_id": "saga-1"});
    let mut fut = pin!(run_saga(&ctx, def, &order));
    let poll = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert_eq!(ctx.divergence(), None);
    let done = match poll {
        Poll::Ready(o) => Some(o.status),
        Poll::Pending => None,
    };
    (done, ctx.take_commands(), ctx.status())
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
    let (done, commands, _) = replay(&checkout(), &first.history, &[]);
    assert_eq!(done, first.end);
    assert!(commands.is_empty(), "{commands:?}");

    // Every prefix replays to exactly the next operation the live run issued.
    for cut in 0..first.history.len() {
        let (done, commands, _) = replay(&checkout(), &first.history[..cut], &[]);
        assert_eq!(done, None);
        assert_eq!(
            commands.len(),
            1,
            "one operation outstanding after {cut} events"
        );
        let (next_seq, next) = &first.history[cut];
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
    let (done, commands, status) = replay(&checkout(), &run.history, &[]);
    assert_eq!(done, None);
    assert_eq!(commands, [Command::WaitSignal]);
    assert_eq!(Some(status), run.end);
    // With the retry signal recorded, it asks for the step again.
    let (_, commands, status) = replay(&checkout(), &run.history, &[(Signal::Retry, 99_999)]);
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
    for (seq, r) in &run.history {
        ctx.resolve(*seq, r.clone());
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

#[test]
fn retry_applies_only_to_a_parked_saga() {
    let parked = SagaStatus::Parked {
        reason: "compensation failed".into(),
    };
    assert_eq!(Signal::Retry.applies_to(&parked), Ok(()));
    let running = Signal::Retry.applies_to(&SagaStatus::Running).unwrap_err();
    assert!(
        running.starts_with("retry applies only to a parked saga, and this one is running; it is still trying on its own"),
        "{running}"
    );
    let ended = Signal::Retry
        .applies_to(&SagaStatus::Completed)
        .unwrap_err();
    assert!(
        ended.contains("it has ended, nothing is left to retry"),
        "{ended}"
    );
}
