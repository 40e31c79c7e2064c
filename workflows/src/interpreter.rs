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
//! - an operator `cancel` is honoured only up to the pivot: the step in
//!   progress finishes, then the completed steps are compensated; a saga
//!   waiting to retry a step stops waiting and compensates at once. The
//!   saga publishes a [`Stage`] so engines can refuse what does not apply.
//!
//! Deterministic: the function only reacts to what the context returns.

use crate::context::{
    ActivityCall, ActivityError, DependencyWait, Phase, SagaContext, Signal, Stage, BREAKER_OPEN,
};
use crate::finished::{Finished, Work};
use crate::model::SagaDef;
use crate::status::SagaStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use undo::{past_pivot_reason, StepOutcome, Undo};

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

/// [`attempt_until_done`]'s attempts.
async fn attempts<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    index: usize,
    phase: Phase,
    first_attempt: u32,
    (order, unknown_since): (&Value, Option<u64>),
    outputs: &[Option<Value>],
) -> Result<Value, Failure> {
    let step = &def.steps[index];
    let (activity, policy, key_suffix, timeout_ms) = match phase {
        Phase::Action => (&step.action, &step.retry, "", step.timeout_ms),
        Phase::Compensation => (
            step.compensation
                .as_ref()
                .expect("compensate only calls steps with a compensation"),
            &def.compensation_retry,
            "/compensate",
            step.compensation_timeout_ms.unwrap_or(step.timeout_ms),
        ),
    };
    // Up to the pivot an action can be cancelled: during its attempts if it
    // comes before the pivot, between them if it is the pivot.
    let up_to_pivot =
        phase == Phase::Action && last_cancellable(def).is_some_and(|last| index <= last);
    let cancellable_while_running =
        phase == Phase::Action && last_cancellable(def).is_some_and(|last| index < last);
    let running = Stage {
        step: Some(index),
        phase: Some(phase),
        cancellable: cancellable_while_running,
    };
    let waiting = Stage {
        cancellable: up_to_pivot,
        ..running
    };
    let idempotency_key = idempotency_key(ctx, &step.name, phase);
    let jitter_key = format!("{}{}", step.name, key_suffix);
    let mut attempt = first_attempt;
    // Attempts made that failed while the dependency's breaker was open:
    // the outage's, not the step's, so the retry policy does not count them.
    let mut outage_attempts = 0;
    // Saga time of the first refusal by an open breaker, and refusals
    // since: the wait for breakers is bounded per step by `max_wait`.
    let mut breaker_wait: Option<(u64, u32)> = None;
    loop {
        ctx.set_stage(&running);
        let call = ActivityCall {
            step: step.name.clone(),
            activity: activity.clone(),
            phase,
            attempt,
            timeout_ms,
            idempotency_key: idempotency_key.clone(),
            input: activity_input(ctx.saga_id(), def, order, outputs, unknown_since),
        };
        let began = ctx.now_ms();
        let result = ctx.call_activity(call).await;
        if ctx.traced() {
            let work = Work::Attempt {
                step: step.name.clone(),
                phase,
                key: idempotency_key.clone(),
                first_attempt,
                attempt,
                error: result.as_ref().err().cloned(),
            };
            report(ctx, def, order, began, work);
        }
        match result {
            Ok(output) => return Ok(output),
            Err(error) => {
                if let Some(wait) = &error.wait {
                    let now = ctx.now_ms();
                    let (since, refusals) = breaker_wait.get_or_insert((now, 0));
                    *refusals += 1;
                    let left = step
                        .max_wait_ms()
                        .saturating_sub(now.saturating_sub(*since));
                    if left > 0 && ctx.patched(BREAKER_WAIT_CHANGE) {
                        let delay =
                            breaker_delay(wait, left, ctx.saga_id(), &jitter_key, *refusals);
                        ctx.set_stage(&waiting);
                        wait_unless_cancelled(ctx, delay, up_to_pivot).await?;
                        // A refused call was not made and keeps its number;
                        // one made (a failed probe, the failure that opened
                        // the breaker) is numbered but not counted.
                        if error.kind != BREAKER_OPEN {
                            attempt += 1;
                            outage_attempts += 1;
                        }
                        continue;
                    }
                }
                let tries_in_round = attempt - first_attempt + 1 - outage_attempts;
                if !policy.should_retry(tries_in_round, &error) {
                    return Err(Failure::Gave(error, attempt));
                }
                let delay = policy.delay_ms(attempt - outage_attempts, ctx.saga_id(), &jitter_key);
                ctx.set_stage(&waiting);
                wait_unless_cancelled(ctx, delay, up_to_pivot).await?;
                attempt += 1;
            }
        }
    }
}

/// The name, for Temporal's patching API, of waiting for open breakers
/// instead of counting their refusals as attempts.
pub const BREAKER_WAIT_CHANGE: &str = "breaker-wait-1";

/// How long to wait after a refusal by an open breaker: until it lets
/// probes through, spread a little per saga so the waiting sagas do not
/// all come back at once, and never past the step's `max_wait` (`left`).
fn breaker_delay(wait: &DependencyWait, left: u64, saga_id: &str, key: &str, n: u32) -> u64 {
    crate::retry::spread_ms(wait.retry_after_ms.max(1), saga_id, key, n).min(left)
}

/// Waits `delay_ms` on a durable timer. Only a cancel up to the pivot can
/// reach a saga that is not parked (the rest are refused); it ends the
/// wait as [`Failure::Cancelled`] when `cancellable`; anything else is
/// ignored and the wait starts again.
async fn wait_unless_cancelled<C: SagaContext>(
    ctx: &C,
    delay_ms: u64,
    cancellable: bool,
) -> Result<(), Failure> {
    loop {
        match ctx.sleep_or_signal(delay_ms).await {
            None => return Ok(()),
            Some(Signal::Cancel) if cancellable => return Err(Failure::Cancelled),
            Some(_) => {}
        }
    }
}

/// The input every activity sees: `{"saga_id", "order", "outputs": {step:
/// output}}`, and `"unknown_since_ms"` for the compensation of a step whose
/// outcome is unknown.
fn activity_input(
    saga_id: &str,
    def: &SagaDef,
    order: &Value,
    outputs: &[Option<Value>],
    unknown_since: Option<u64>,
) -> Value {
    let mut done = Map::new();
    for (step, output) in def.steps.iter().zip(outputs) {
        if let Some(output) = output {
            done.insert(step.name.clone(), output.clone());
        }
    }
    let mut input = Map::new();
    input.insert("saga_id".into(), Value::String(saga_id.to_owned()));
    input.insert("order".into(), order.clone());
    input.insert("outputs".into(), Value::Object(done));
    if let Some(ms) = unknown_since {
        input.insert("unknown_since_ms".into(), Value::from(ms));
    }
    Value::Object(input)
}
