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
//!   is exhausted the saga parks and waits for an operator `retry` signal,
//!   never giving up silently;
//! - after the pivot only forward recovery exists: a step that keeps failing
//!   parks the saga until an operator retries it.
//!
//! Deterministic: the function only reacts to what the context returns.

use crate::context::{ActivityCall, ActivityError, Phase, SagaContext, Signal};
use crate::model::SagaDef;
use crate::status::SagaStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaOutcome {
    /// `Completed` or `Compensated`.
    pub status: SagaStatus,
}

/// Runs a saga to its end. Parked sagas stay inside this future, waiting
/// for a signal, so it returns only a terminal status.
pub async fn run_saga<C: SagaContext>(ctx: &C, def: &SagaDef, order: &Value) -> SagaOutcome {
    let mut outputs: Vec<Option<Value>> = vec![None; def.steps.len()];
    ctx.set_status(SagaStatus::Running);
    let mut index = 0;
    let mut first_attempt = 1;
    while index < def.steps.len() {
        match attempt_until_done(
            ctx,
            def,
            index,
            Phase::Action,
            first_attempt,
            order,
            &outputs,
        )
        .await
        {
            Ok(output) => {
                outputs[index] = Some(output);
                index += 1;
                first_attempt = 1;
            }
            Err((error, last_attempt)) if def.is_after_pivot(index) => {
                let step = &def.steps[index];
                ctx.set_status(SagaStatus::Parked {
                    reason: format!(
                        "step {} ({}) is past the pivot and failed after {} attempt(s): {}; \
                         fix the cause, then signal retry",
                        step.name, step.action, last_attempt, error
                    ),
                });
                wait_for(ctx, Signal::Retry).await;
                ctx.set_status(SagaStatus::Running);
                first_attempt = last_attempt + 1;
            }
            Err((error, _)) => {
                // A retryable failure leaves the outcome unknown: undo this
                // step too. A business failure (not retryable, or a kind the
                // policy lists as non-retryable) means it did not happen.
                let step = &def.steps[index];
                let definitive =
                    !error.retryable || step.retry.non_retryable.iter().any(|k| k == &error.kind);
                let undo_through = if definitive {
                    index.checked_sub(1)
                } else {
                    Some(index)
                };
                if let Some(last) = undo_through {
                    compensate(ctx, def, last, order, &outputs).await;
                }
                ctx.set_status(SagaStatus::Compensated);
                return SagaOutcome {
                    status: SagaStatus::Compensated,
                };
            }
        }
    }
    ctx.set_status(SagaStatus::Completed);
    SagaOutcome {
        status: SagaStatus::Completed,
    }
}

/// Undoes steps `last..=0` in reverse, parking on a compensation that keeps
/// failing until an operator retries it.
async fn compensate<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    last: usize,
    order: &Value,
    outputs: &[Option<Value>],
) {
    ctx.set_status(SagaStatus::Compensating);
    for index in (0..=last).rev() {
        let step = &def.steps[index];
        let Some(activity) = &step.compensation else {
            continue;
        };
        let mut first_attempt = 1;
        loop {
            match attempt_until_done(
                ctx,
                def,
                index,
                Phase::Compensation,
                first_attempt,
                order,
                outputs,
            )
            .await
            {
                Ok(_) => break,
                Err((error, last_attempt)) => {
                    ctx.set_status(SagaStatus::Parked {
                        reason: format!(
                            "compensation of step {} ({}) failed after {} attempt(s): {}; \
                             fix the cause, then signal retry",
                            step.name, activity, last_attempt, error
                        ),
                    });
                    wait_for(ctx, Signal::Retry).await;
                    ctx.set_status(SagaStatus::Compensating);
                    first_attempt = last_attempt + 1;
                }
            }
        }
    }
}

/// Waits until `wanted` arrives; other signals do not apply here.
async fn wait_for<C: SagaContext>(ctx: &C, wanted: Signal) {
    while ctx.wait_signal().await != wanted {}
}

/// Runs attempts of one step's action or compensation until one succeeds or
/// the policy says stop. Returns the last error and its attempt number.
async fn attempt_until_done<C: SagaContext>(
    ctx: &C,
    def: &SagaDef,
    index: usize,
    phase: Phase,
    first_attempt: u32,
    order: &Value,
    outputs: &[Option<Value>],
) -> Result<Value, (ActivityError, u32)> {
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
    let idempotency_key = format!("{}/{}{}", ctx.saga_id(), step.name, key_suffix);
    let jitter_key = format!("{}{}", step.name, key_suffix);
    let mut attempt = first_attempt;
    loop {
        let call = ActivityCall {
            step: step.name.clone(),
            activity: activity.clone(),
            phase,
            attempt,
            timeout_ms,
            idempotency_key: idempotency_key.clone(),
            input: activity_input(ctx.saga_id(), def, order, outputs),
        };
        match ctx.call_activity(call).await {
            Ok(output) => return Ok(output),
            Err(error) => {
                let tries_in_round = attempt - first_attempt + 1;
                if !policy.should_retry(tries_in_round, &error) {
                    return Err((error, attempt));
                }
                let delay = policy.delay_ms(attempt, ctx.saga_id(), &jitter_key);
                ctx.sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// The input every activity sees: `{"saga_id", "order", "outputs": {step: output}}`.
fn activity_input(saga_id: &str, def: &SagaDef, order: &Value, outputs: &[Option<Value>]) -> Value {
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
    Value::Object(input)
}
