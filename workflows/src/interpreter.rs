//! The one generic saga interpreter.
//!
//! [`run_saga`] walks a [`SagaDef`] over any [`SagaContext`]:
//!
//! - forward steps run in order, each attempt retried under its policy with
//!   durable timers between attempts;
//! - when a step up to and including the pivot fails for good (a business
//!   failure, or retries exhausted), the completed steps are compensated in
//!   reverse. A step whose last failure was retryable (a timeout, say) may
//!   have taken effect, so it is compensated too; compensations must
//!   therefore treat "nothing to undo" as success;
//! - compensations are retried under the saga's compensation policy; when it
//!   is exhausted the saga parks and waits for an operator `retry` or
//!   `resolve`, never giving up silently;
//! - after the pivot only forward recovery exists: a step that keeps failing
//!   parks the saga until an operator retries or resolves it;
//! - an attempt an open circuit breaker refused (the error carries a
//!   [`DependencyWait`]) was not made: the saga waits on a durable timer
//!   until the breaker lets probes through, without spending an attempt,
//!   for at most the step's `max_wait` in all; after that such a refusal
//!   counts as a failed attempt and the policy decides as usual. An
//!   attempt that was made and failed while the breaker is open (the
//!   failure that opened it, a failed probe) carries the wait too: the
//!   saga waits the same way and the policy does not count that attempt;
//!   nor those that failed in the run of failures the breaker opened on,
//!   nor a compensation's within its step's `settle_ms` (see `attempts`);
//! - an operator `cancel` is honoured only up to the pivot: the step in
//!   progress finishes, then the completed steps are compensated; a saga
//!   waiting to retry a step stops waiting and compensates at once. The
//!   saga publishes a [`Stage`] so engines can refuse what does not apply.
//!
//! Deterministic: the function only reacts to what the context returns.

use crate::context::{ActivityError, Phase, SagaContext, Signal, Stage};
use crate::finished::{Finished, Work};
use crate::model::SagaDef;
use crate::status::SagaStatus;
use attempts::attempts;
pub use attempts::{BREAKER_WAIT_CHANGE, OUTAGE_BUDGET_CHANGE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use undo::{past_pivot_reason, StepOutcome, Undo};

mod attempts;
mod undo;

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaOutcome {
    /// `Completed` or `Compensated`.
    pub status: SagaStatus,
}

/// Runs a saga to its end. Parked sagas stay inside this future, waiting
/// for an operator command, so it returns only a terminal status.
pub async fn run_saga<C: SagaContext>(ctx: &C, def: &SagaDef, order: &Value) -> SagaOutcome {
    let began = ctx.now_ms();
    let outcome = run_steps(ctx, def, order).await;
    if ctx.traced() {
        let status = outcome.status.name();
        report(ctx, def, order, began, Work::Saga { status });
    }
    outcome
}

/// Tells the engine that `work`, begun at saga time `started_ms`, ended
/// now (only called when it asked: [`SagaContext::traced`]).
fn report<C: SagaContext>(ctx: &C, def: &SagaDef, order: &Value, started_ms: u64, work: Work) {
    ctx.finished(Finished {
        saga_id: ctx.saga_id().to_owned(),
        saga: def.name.clone(),
        traceparent: order
            .get("traceparent")
            .and_then(Value::as_str)
            .map(str::to_owned),
        started_ms,
        ended_ms: ctx.now_ms(),
        work,
    });
}

/// [`run_saga`]'s steps, and what follows when one fails.
async fn run_steps<C: SagaContext>(ctx: &C, def: &SagaDef, order: &Value) -> SagaOutcome {
    let mut outputs: Vec<Option<Value>> = vec![None; def.steps.len()];
    ctx.set_status(SagaStatus::Running);
    let mut index = 0;
    let mut first_attempt = 1;
    while index < def.steps.len() {
        let step = &def.steps[index];
        match attempt_until_done(
            ctx,
            def,
            index,
            Phase::Action,
            first_attempt,
            (order, None),
            &outputs,
        )
        .await
        {
            Ok(output) => {
                outputs[index] = Some(output);
                // A cancel that arrived while the step ran: it is done, so
                // it is undone with the others.
                if last_cancellable(def).is_some_and(|last| index < last)
                    && ctx.try_signal() == Some(Signal::Cancel)
                {
                    let undo = Undo::decide(ctx, def, index, StepOutcome::Done);
                    if !undo.past_pivot {
                        return compensate_and_end(ctx, def, undo, order, &outputs).await;
                    }
                    // An earlier run may have gone on past the pivot: park
                    // on the next step rather than compensate behind it.
                    let next = &def.steps[index + 1];
                    let reason = past_pivot_reason(def, &next.name, "is next and a cancel arrived");
                    index += 1;
                    first_attempt = 1;
                    match park(ctx, index, &next.name, Phase::Action, reason, true).await {
                        Unparked::Retry => {}
                        Unparked::Resolved(output) => {
                            outputs[index] = Some(output);
                            index += 1;
                        }
                        Unparked::Cancel => {
                            return compensate_and_end(ctx, def, undo, order, &outputs).await;
                        }
                    }
                    ctx.set_status(SagaStatus::Running);
                    continue;
                }
                index += 1;
                first_attempt = 1;
            }
            Err(Failure::Cancelled) => {
                // Cancelled while waiting to retry: the last attempt failed
                // retryably, so it may have taken effect: undo it too. (The
                // wait's timer recorded every result before it, so no
                // unrecorded run went further: no chain to widen.)
                let undo = Undo {
                    through: Some(index),
                    skip: None,
                    unknown: Some((ctx.now_ms(), index)),
                    past_pivot: false,
                };
                return compensate_and_end(ctx, def, undo, order, &outputs).await;
            }
            Err(Failure::Gave(error, last_attempt)) if def.is_after_pivot(index) => {
                let reason = format!(
                    "step {} ({}) is past the pivot and failed after {} attempt(s): {}; \
                     fix the cause, then `sagaflow retry`, or do the step by hand and `sagaflow resolve --step {}`",
                    step.name, step.action, last_attempt, error, step.name
                );
                match park(ctx, index, &step.name, Phase::Action, reason, false).await {
                    Unparked::Retry => first_attempt = last_attempt + 1,
                    Unparked::Resolved(output) => {
                        outputs[index] = Some(output);
                        index += 1;
                        first_attempt = 1;
                    }
                    Unparked::Cancel => unreachable!("a park past the pivot is not cancellable"),
                }
                ctx.set_status(SagaStatus::Running);
            }
            Err(Failure::Gave(error, last_attempt)) => {
                // A retryable failure leaves the outcome unknown: undo this
                // step too. A business failure (not retryable, or a kind the
                // policy lists as non-retryable) means it did not happen.
                let definitive =
                    !error.retryable || step.retry.non_retryable.iter().any(|k| k == &error.kind);
                let outcome = if definitive {
                    StepOutcome::NotDone
                } else {
                    StepOutcome::Unknown
                };
                let undo = Undo::decide(ctx, def, index, outcome);
                if !undo.past_pivot {
                    return compensate_and_end(ctx, def, undo, order, &outputs).await;
                }
                let what = format!("failed after {last_attempt} attempt(s): {error}");
                let reason = past_pivot_reason(def, &step.name, &what);
                match park(ctx, index, &step.name, Phase::Action, reason, true).await {
                    Unparked::Retry => first_attempt = last_attempt + 1,
                    Unparked::Resolved(output) => {
                        outputs[index] = Some(output);
                        index += 1;
                        first_attempt = 1;
                    }
                    Unparked::Cancel => {
                        return compensate_and_end(ctx, def, undo, order, &outputs).await;
                    }
                }
                ctx.set_status(SagaStatus::Running);
            }
        }
    }
    ctx.set_stage(&Stage::default());
    ctx.set_status(SagaStatus::Completed);
    SagaOutcome {
        status: SagaStatus::Completed,
    }
}

/// The index of the last step whose success a cancel may still undo: the
/// pivot, or the last step of a saga without one. While that step's own
/// attempt runs, a cancel is refused: if it succeeds there is no going back.
fn last_cancellable(def: &SagaDef) -> Option<usize> {
    def.pivot.or(def.steps.len().checked_sub(1))
}

/// Undoes what `undo` names and ends the saga compensated.
async fn compensate_and_end<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    undo: Undo,
    order: &Value,
    outputs: &[Option<Value>],
) -> SagaOutcome {
    compensate(ctx, def, undo, order, outputs).await;
    ctx.set_stage(&Stage::default());
    ctx.set_status(SagaStatus::Compensated);
    SagaOutcome {
        status: SagaStatus::Compensated,
    }
}

/// Undoes the steps `undo` names in reverse, parking on a compensation that
/// keeps failing until an operator retries or resolves it.
async fn compensate<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    undo: Undo,
    order: &Value,
    outputs: &[Option<Value>],
) {
    let Some(last) = undo.through else {
        return;
    };
    ctx.set_status(SagaStatus::Compensating);
    for index in (0..=last).rev() {
        let step = &def.steps[index];
        let Some(activity) = &step.compensation else {
            continue;
        };
        if undo.skip == Some(index) {
            continue;
        }
        let mut first_attempt = 1;
        loop {
            let unknown_since = undo
                .unknown
                .filter(|(_, from)| index >= *from)
                .map(|(since, _)| since);
            match attempt_until_done(
                ctx,
                def,
                index,
                Phase::Compensation,
                first_attempt,
                (order, unknown_since),
                outputs,
            )
            .await
            {
                Ok(_) => break,
                // Compensations are not cancellable: only a park ends them.
                Err(Failure::Cancelled) => unreachable!("a compensation is never cancelled"),
                Err(Failure::Gave(error, last_attempt)) => {
                    let reason = format!(
                        "compensation of step {} ({}) failed after {} attempt(s): {}; \
                         fix the cause, then `sagaflow retry`, or undo the step by hand and `sagaflow resolve --step {}`",
                        step.name, activity, last_attempt, error, step.name
                    );
                    let unparked =
                        park(ctx, index, &step.name, Phase::Compensation, reason, false).await;
                    ctx.set_status(SagaStatus::Compensating);
                    match unparked {
                        Unparked::Retry => first_attempt = last_attempt + 1,
                        Unparked::Resolved(_) => break,
                        Unparked::Cancel => {
                            unreachable!("a compensation's park is not cancellable")
                        }
                    }
                }
            }
        }
    }
}

/// How an operator let a parked saga go on.
enum Unparked {
    /// Run the step or compensation again, with a fresh retry budget.
    Retry,
    /// The operator did it by hand; this is its output.
    Resolved(Value),
    /// Compensate (only where the park is `cancellable`).
    Cancel,
}

/// Parks the saga on step `index`'s (named `name`) action or compensation
/// until an operator retries or resolves it, or cancels it where
/// `cancellable`; other commands do not apply here.
async fn park<C: SagaContext>(
    ctx: &C,
    index: usize,
    name: &str,
    phase: Phase,
    reason: String,
    cancellable: bool,
) -> Unparked {
    ctx.set_stage(&Stage {
        step: Some(index),
        phase: Some(phase),
        cancellable,
    });
    ctx.set_status(SagaStatus::Parked { reason });
    loop {
        match ctx.wait_signal().await {
            Signal::Retry => return Unparked::Retry,
            Signal::Resolve {
                step: named,
                output,
            } if named == name => return Unparked::Resolved(output),
            Signal::Cancel if cancellable => return Unparked::Cancel,
            Signal::Resolve { .. } | Signal::Cancel => {}
        }
    }
}

/// Why a step or compensation did not succeed.
enum Failure {
    /// The policy gave up: the last error and its attempt number.
    Gave(ActivityError, u32),
    /// An operator cancelled the saga while it waited to retry the step.
    Cancelled,
}

/// Runs attempts of one step's action or compensation until one succeeds,
/// the policy says stop, or (an action up to the pivot, between attempts)
/// an operator cancels; reports the run when the engine traces.
async fn attempt_until_done<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    index: usize,
    phase: Phase,
    first_attempt: u32,
    inputs: (&Value, Option<u64>),
    outputs: &[Option<Value>],
) -> Result<Value, Failure> {
    let began = ctx.now_ms();
    let result = attempts(ctx, def, index, phase, first_attempt, inputs, outputs).await;
    if ctx.traced() {
        let step = &def.steps[index];
        let work = Work::Step {
            step: step.name.clone(),
            phase,
            key: idempotency_key(ctx, &step.name, phase),
            first_attempt,
            outcome: match &result {
                Ok(_) => "completed",
                Err(Failure::Gave(..)) => "failed",
                Err(Failure::Cancelled) => "cancelled",
            },
        };
        report(ctx, def, inputs.0, began, work);
    }
    result
}

/// The idempotency key of a step's action or compensation: stable across
/// its attempts, retries and crashes.
fn idempotency_key<C: SagaContext>(ctx: &C, step: &str, phase: Phase) -> String {
    let suffix = match phase {
        Phase::Action => "",
        Phase::Compensation => "/compensate",
    };
    format!("{}/{}{}", ctx.saga_id(), step, suffix)
}
