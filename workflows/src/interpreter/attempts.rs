//! The attempts of one step's action or compensation, and what each
//! failure costs the step's retry budget.
//!
//! A failed attempt counts against the retry policy unless the failure
//! was the dependency's, not the step's:
//! - it carries a wait (its breaker refused it, or it failed while the
//!   dependency was down): the saga waits durably, up to the step's
//!   `max_wait`, and the attempt is not counted;
//! - it failed while the breaker was still closed, in a run of failures
//!   the breaker then opened on (its `failing_since_ms` is a later wait's
//!   `since_ms`): it is taken back when that wait arrives;
//! - it is a compensation of a step whose outcome is unknown, within the
//!   step's `settle_ms` of when it became unknown (the provider's search
//!   may not show what the step did yet): the compensation keeps trying,
//!   by time, through every retryable failure.
//!
//! A `Retry-After` the dependency sent makes the wait before the next
//! attempt at least that long, capped by the step's `max_wait`.

use super::{idempotency_key, last_cancellable, report, Failure};
use crate::context::{
    ActivityCall, DependencyWait, Phase, SagaContext, Signal, Stage, BREAKER_OPEN,
};
use crate::finished::Work;
use crate::model::SagaDef;
use serde_json::{Map, Value};

/// The name, for Temporal's patching API, of waiting for open breakers
/// instead of counting their refusals as attempts.
pub const BREAKER_WAIT_CHANGE: &str = "breaker-wait-1";

/// The name, for Temporal's patching API, of the budget rules added with
/// it: attempts taken back when the breaker opens on their run of
/// failures, compensations that settle by time, `Retry-After` honoured.
pub const OUTAGE_BUDGET_CHANGE: &str = "outage-budget-1";

/// [`super::attempt_until_done`]'s attempts.
pub(super) async fn attempts<C: SagaContext>(
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
    // Until when a compensation keeps trying whatever its attempt count.
    let settle_until = match (phase, unknown_since, step.settle_ms) {
        (Phase::Compensation, Some(since), Some(settle)) => Some(since.saturating_add(settle)),
        _ => None,
    };
    let idempotency_key = idempotency_key(ctx, &step.name, phase);
    let jitter_key = format!("{}{}", step.name, key_suffix);
    let mut attempt = first_attempt;
    // Attempts made that failed while the dependency's breaker was open
    // (or in the run it opened on): the outage's, not the step's, so the
    // retry policy does not count them, and the backoff starts again.
    let mut outage_attempts = 0;
    // Attempts of a compensation within its settle window: not counted,
    // but the backoff keeps growing.
    let mut settling_attempts = 0;
    // The runs of failures (their `failing_since_ms`) of counted attempts.
    let mut counted_runs: Vec<u64> = Vec::new();
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
        let error = match result {
            Ok(output) => return Ok(output),
            Err(error) => error,
        };
        let now = ctx.now_ms();
        if let Some(wait) = &error.wait {
            let (since, refusals) = breaker_wait.get_or_insert((now, 0));
            *refusals += 1;
            let left = step
                .max_wait_ms()
                .saturating_sub(now.saturating_sub(*since));
            if left > 0 && ctx.patched(BREAKER_WAIT_CHANGE) {
                if counted_runs.contains(&wait.since_ms) && ctx.patched(OUTAGE_BUDGET_CHANGE) {
                    let before = counted_runs.len();
                    counted_runs.retain(|run| *run != wait.since_ms);
                    outage_attempts += (before - counted_runs.len()) as u32;
                }
                let delay = breaker_delay(wait, left, ctx.saga_id(), &jitter_key, *refusals);
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
        let settling = settle_until.is_some_and(|until| now < until)
            && error.retryable
            && !policy.non_retryable.contains(&error.kind)
            && ctx.patched(OUTAGE_BUDGET_CHANGE);
        if settling {
            settling_attempts += 1;
        } else {
            let tries_in_round = attempt - first_attempt + 1 - outage_attempts - settling_attempts;
            if !policy.should_retry(tries_in_round, &error) {
                return Err(Failure::Gave(error, attempt));
            }
            if let Some(run) = error.failing_since_ms {
                counted_runs.push(run);
            }
        }
        let mut delay = policy.delay_ms(attempt - outage_attempts, ctx.saga_id(), &jitter_key);
        if let Some(asked) = error.retry_after_ms {
            if asked > delay && ctx.patched(OUTAGE_BUDGET_CHANGE) {
                delay = asked.min(step.max_wait_ms());
            }
        }
        ctx.set_stage(&waiting);
        wait_unless_cancelled(ctx, delay, up_to_pivot).await?;
        attempt += 1;
    }
}

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
