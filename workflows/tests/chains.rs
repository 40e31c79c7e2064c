//! Chains of steps an engine records together (Temporal's local
//! activities): when a run that may follow a crash stops the saga, every
//! step of the chain whose effect may exist is compensated, and a chain
//! that may have passed the pivot never compensates behind it.
//!
//! The context below is the embedded engine's [`ReplayContext`] with the
//! two answers a chained engine gives: where a step's chain ends, and
//! whether this run is provably the chain's first.

use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, Phase, ReplayContext, Resolution, SagaContext,
    SagaDef, SagaStatus, Signal, Stage,
};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

mod common;
use common::checkout;

/// How the engine under test chains steps.
#[derive(Clone, Copy)]
enum Chains {
    /// Every step local, one chain (Temporal's `steps = "local"`).
    AllLocal,
    /// The steps before the pivot one chain, the pivot alone, the steps
    /// after it one chain (`steps = "checkpointed"`).
    AroundPivot,
}

struct Chained {
    inner: ReplayContext,
    chains: Chains,
    first_run: bool,
}

impl SagaContext for Chained {
    fn saga_id(&self) -> &str {
        self.inner.saga_id()
    }
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    fn call_activity(
        &self,
        call: ActivityCall,
    ) -> impl Future<Output = Result<Value, ActivityError>> {
        self.inner.call_activity(call)
    }
    fn sleep_or_signal(&self, delay_ms: u64) -> impl Future<Output = Option<Signal>> {
        self.inner.sleep_or_signal(delay_ms)
    }
    fn wait_signal(&self) -> impl Future<Output = Signal> {
        self.inner.wait_signal()
    }
    fn try_signal(&self) -> Option<Signal> {
        self.inner.try_signal()
    }
    fn set_status(&self, status: SagaStatus) {
        self.inner.set_status(status)
    }
    fn set_stage(&self, stage: &Stage) {
        self.inner.set_stage(stage)
    }
    fn chain_end(&self, def: &SagaDef, index: usize) -> usize {
        let last = def.steps.len() - 1;
        match (self.chains, def.pivot) {
            (Chains::AllLocal, _) | (Chains::AroundPivot, None) => last,
            (Chains::AroundPivot, Some(p)) if index < p => p - 1,
            (Chains::AroundPivot, Some(p)) if index == p => p,
            (Chains::AroundPivot, Some(_)) => last,
        }
    }
    fn first_run(&self) -> bool {
        self.first_run
    }
}

/// What a run did: the calls (`undo:` for compensations, with the
/// `unknown_since_ms` each compensation saw), where it ended, the stage.
struct Run {
    calls: Vec<(String, Option<Value>)>,
    end: SagaStatus,
    stage: Stage,
}

impl Run {
    fn names(&self) -> Vec<&str> {
        self.calls.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Drives the saga with `answer` for each call and `signals` for each
/// wait (stopping, parked, when none is left).
fn drive(
    chains: Chains,
    first_run: bool,
    mut answer: impl FnMut(&ActivityCall) -> Result<Value, ActivityError>,
    signals: &[Signal],
) -> Run {
    let ctx = Chained {
        inner: ReplayContext::new("saga-1", 1_000),
        chains,
        first_run,
    };
    let def = checkout();
    let order = json!({"order_id": "saga-1"});
    let mut fut = pin!(run_saga(&ctx, &def, &order));
    let mut cx = Context::from_waker(Waker::noop());
    let mut signals = signals.iter();
    let mut calls = Vec::new();
    let mut clock = 1_000;
    loop {
        if let Poll::Ready(outcome) = fut.as_mut().poll(&mut cx) {
            return Run {
                calls,
                end: outcome.status,
                stage: ctx.inner.stage(),
            };
        }
        let mut pending = ctx.inner.take_commands();
        assert!(!pending.is_empty(), "a pending saga waits on something");
        match pending.remove(0) {
            Command::Activity { seq, call } => {
                let name = match call.phase {
                    Phase::Action => call.activity.clone(),
                    Phase::Compensation => format!("undo:{}", call.activity),
                };
                calls.push((name, call.input.get("unknown_since_ms").cloned()));
                clock += 1;
                let result = answer(&call);
                ctx.inner.resolve(
                    seq,
                    Resolution::Activity {
                        activity: call.activity.clone(),
                        result,
                        at_ms: clock,
                    },
                );
            }
            Command::Timer { seq, fire_at_ms } => {
                clock = fire_at_ms;
                ctx.inner
                    .resolve(seq, Resolution::Timer { at_ms: fire_at_ms });
            }
            Command::WaitSignal => match signals.next() {
                Some(s) => {
                    clock += 1;
                    ctx.inner.push_signal(s.clone(), clock);
                }
                None => {
                    return Run {
                        calls,
                        end: ctx.inner.status(),
                        stage: ctx.inner.stage(),
                    }
                }
            },
        }
    }
}

fn ok(_: &ActivityCall) -> Result<Value, ActivityError> {
    Ok(json!({}))
}

/// Out of stock on the reserve: what a re-run after the commit met before
/// the Redis reserve stopped undoing held lines.
fn sold_out(c: &ActivityCall) -> Result<Value, ActivityError> {
    match c.activity.as_str() {
        "stock.reserve" => Err(ActivityError::business("out_of_stock", "none left")),
        _ => ok(c),
    }
}

#[test]
fn a_chain_that_may_have_passed_the_pivot_parks_instead_of_compensating() {
    let run = drive(Chains::AllLocal, false, sold_out, &[]);
    assert_eq!(run.names(), ["stock.reserve"], "nothing is undone");
    let SagaStatus::Parked { reason } = &run.end else {
        panic!("expected a park, got {:?}", run.end);
    };
    assert!(
        reason.contains("may have passed the pivot (capture_payment)"),
        "{reason}"
    );
    assert!(
        reason.contains("sagaflow retry") && reason.contains("sagaflow cancel"),
        "{reason}"
    );
    assert!(run.stage.cancellable, "the operator may cancel it");
    assert_eq!(
        Signal::Cancel.applies_to(&run.end, &run.stage, &checkout().steps),
        Ok(())
    );
}

#[test]
fn an_operator_retry_sends_the_parked_chain_forward() {
    let mut reserves = 0;
    let run = drive(
        Chains::AllLocal,
        false,
        |c| {
            if c.activity == "stock.reserve" {
                reserves += 1;
                if reserves == 1 {
                    return sold_out(c);
                }
            }
            ok(c)
        },
        &[Signal::Retry],
    );
    assert_eq!(run.end, SagaStatus::Completed);
    assert!(
        run.names().iter().all(|n| !n.starts_with("undo:")),
        "{:?}",
        run.names()
    );
}

#[test]
fn an_operator_cancel_compensates_the_whole_chain() {
    let run = drive(Chains::AllLocal, false, sold_out, &[Signal::Cancel]);
    assert_eq!(run.end, SagaStatus::Compensated);
    // The reserve failed definitively: it did not happen; every later step
    // of the chain may have, so its compensation runs (finding nothing to
    // undo is success), told since when the outcome is unknown.
    assert_eq!(
        run.names(),
        ["stock.reserve", "undo:orders.cancel", "undo:payment.void"]
    );
    for (name, unknown) in &run.calls[1..] {
        assert!(
            unknown.is_some(),
            "{name} was not told its step's outcome is unknown"
        );
    }
}

#[test]
fn a_first_run_compensates_only_its_own_path() {
    for chains in [Chains::AllLocal, Chains::AroundPivot] {
        let run = drive(
            chains,
            true,
            |c| match c.activity.as_str() {
                "payment.authorize" => Err(ActivityError::business("card_declined", "no")),
                _ => ok(c),
            },
            &[],
        );
        assert_eq!(run.end, SagaStatus::Compensated);
        assert_eq!(
            run.names(),
            ["stock.reserve", "payment.authorize", "undo:stock.release"]
        );
    }
}

#[test]
fn a_re_run_before_the_pivot_compensates_every_step_of_its_chain() {
    let run = drive(
        Chains::AroundPivot,
        false,
        |c| match c.activity.as_str() {
            "payment.authorize" => Err(ActivityError::business("card_declined", "no")),
            _ => ok(c),
        },
        &[],
    );
    assert_eq!(
        run.end,
        SagaStatus::Compensated,
        "the chain ends before the pivot"
    );
    assert_eq!(
        run.names(),
        [
            "stock.reserve",
            "payment.authorize",
            "undo:orders.cancel",
            "undo:stock.release"
        ],
        "an earlier run may have created the order; the declined authorization did not happen"
    );
    assert!(run.calls[2].1.is_some(), "the order's outcome is unknown");
    assert!(
        run.calls[3].1.is_none(),
        "the reserve succeeded in this run"
    );
}

#[test]
fn past_the_pivot_a_chain_goes_forward_as_before() {
    let run = drive(
        Chains::AroundPivot,
        false,
        |c| match c.activity.as_str() {
            "stock.commit" => Err(ActivityError::business("reservation_expired", "gone")),
            _ => ok(c),
        },
        &[],
    );
    assert!(
        matches!(run.end, SagaStatus::Parked { .. }),
        "{:?}",
        run.end
    );
    assert!(run.names().iter().all(|n| !n.starts_with("undo:")));
    assert!(!run.stage.cancellable);
}
