//! The runtime-neutral interface between the saga interpreter and an engine.
//!
//! An engine (the embedded journal or Temporal) implements [`SagaContext`];
//! the interpreter only ever talks to it. Every method is durable in the
//! engine's sense: a result once returned is returned again, unchanged, when
//! the saga is replayed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;

/// Whether an activity call does a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    /// "action" or "compensation".
    pub fn name(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        }
    }
}

/// One attempt at running an activity, as the interpreter asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityCall {
    /// The saga step this call belongs to.
    pub step: String,
    /// Registered activity name.
    pub activity: String,
    /// Action or compensation.
    pub phase: Phase,
    /// 1-based attempt number within this step and phase.
    pub attempt: u32,
    /// Time limit for this attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Stable across retries and crashes: saga id + step (+ phase).
    pub idempotency_key: String,
    /// The activity's input: saga id, the order, earlier steps' outputs.
    pub input: Value,
}

/// Why an activity attempt failed.
///
/// `retryable` errors (network, 429, 5xx, timeouts) may be tried again under
/// the step's retry policy; business failures (declined card, out of stock)
/// are not retryable and send the saga straight to compensation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ActivityError {
    /// A short machine-readable kind, e.g. "timeout", "card_declined".
    pub kind: String,
    /// What happened, for operators.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// Set when the dependency's circuit breaker is open: the attempt was
    /// refused (kind [`BREAKER_OPEN`]), or made and failed while the
    /// dependency is down. The interpreter then waits durably, without
    /// counting the attempt, up to the step's `max_wait`.
    /// (Boxed: it is rare, and keeps every `Result<_, ActivityError>`
    /// small.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Box<DependencyWait>>,
    /// Set when the attempt failed in a way its dependency's breaker
    /// counts while the breaker was still closed: when the run of failures
    /// it belongs to began (worker clock). If the breaker then opens on
    /// that run, its waits carry the same moment
    /// ([`DependencyWait::since_ms`]) and the interpreter takes the
    /// attempt back: it failed in the moments before the breaker opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// How long the dependency asked to be left alone (its `Retry-After`),
    /// in ms: the next attempt waits at least this long, capped by the
    /// step's `max_wait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// What an attempt refused by an open circuit breaker waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyWait {
    /// The dependency whose breaker is open: "payment", "stock", "orders".
    pub dependency: String,
    /// When the outage began: the first failure of the run that opened
    /// the breaker (worker clock, ms since the Unix epoch).
    pub since_ms: u64,
    /// How long to wait before trying again: until the breaker lets a
    /// probe through.
    pub retry_after_ms: u64,
}

/// The error kind of an attempt an open circuit breaker refused.
pub const BREAKER_OPEN: &str = "breaker_open";

impl ActivityError {
    /// A transient failure: the retry policy decides what happens next.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
            wait: None,
            failing_since_ms: None,
            retry_after_ms: None,
        }
    }

    /// A business failure: retrying cannot help.
    pub fn business(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
            wait: None,
            failing_since_ms: None,
            retry_after_ms: None,
        }
    }

    /// An attempt that was not made: `wait.dependency`'s breaker is open.
    /// Retryable, so an engine or interpreter that does not know waits
    /// still treats it as a transient failure.
    pub fn breaker_open(wait: DependencyWait) -> Self {
        ActivityError {
            kind: BREAKER_OPEN.into(),
            message: format!(
                "not tried: the {} circuit breaker is open; trying again in {} ms",
                wait.dependency, wait.retry_after_ms
            ),
            retryable: true,
            wait: Some(Box::new(wait)),
            failing_since_ms: None,
            retry_after_ms: None,
        }
    }
}

/// An operator command delivered to a saga through the engine's inbox (a
/// journaled inbox row on the embedded engine, a workflow Update on
/// Temporal). Each is checked with [`Signal::applies_to`] before it is
/// accepted: one that does not apply is refused, never kept for later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Retry the step or compensation the saga is parked on, with a fresh
    /// retry budget.
    Retry,
    /// Stop a saga before its pivot after the step in progress and
    /// compensate what it completed, in reverse.
    Cancel,
    /// Record the step or compensation the saga is parked on as done by
    /// hand, with `output` as its result, and go on.
    Resolve {
        /// The step the saga is parked on (named, so that a resolve meant
        /// for another step is refused rather than misapplied).
        step: String,
        /// What the step returned (later steps read it); `{}` by default.
        #[serde(default = "empty_object")]
        output: Value,
    },
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Where a saga stands, as far as operator commands care. The interpreter
/// keeps it current ([`SagaContext::set_stage`]); [`Signal::applies_to`]
/// reads it with the status.
///
/// It names the step by its index in the definition, not by name: the
/// interpreter sets it at every step, and a `Copy` stage costs no
/// allocation there; [`Stage::step_name`] names it when a command is
/// checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The index in the definition's steps of the step in progress,
    /// parked on, or being compensated.
    pub step: Option<usize>,
    /// Whether `step`'s action or its compensation is meant.
    pub phase: Option<Phase>,
    /// True while a cancel can still be honoured: the saga runs a step
    /// before its pivot, or waits to retry a step up to the pivot. False
    /// while the pivot's own attempt runs (it may succeed: past the point
    /// of no return) and from then on.
    pub cancellable: bool,
}

impl Stage {
    /// The name of the stage's step among `steps` (the saga's definition).
    pub fn step_name<'a>(&self, steps: &'a [StepDef]) -> Option<&'a str> {
        self.step
            .and_then(|i| steps.get(i))
            .map(|s| s.name.as_str())
    }
}

impl Signal {
    /// Every command name, as the CLI and the journal write them.
    pub const NAMES: [&'static str; 3] = ["retry", "cancel", "resolve"];

    /// Parses a command that takes no arguments ("retry", "cancel").
    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "retry" => Some(Signal::Retry),
            "cancel" => Some(Signal::Cancel),
            _ => None,
        }
    }

    /// The command's name as the CLI and the journal write it.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Retry => "retry",
            Signal::Cancel => "cancel",
            Signal::Resolve { .. } => "resolve",
        }
    }

    /// Whether the command applies to a saga in `status` at `stage`, or
    /// why not. A command that does not apply is refused, never kept: a
    /// retry kept for a running saga would be spent, unasked, at its next
    /// park. `steps` are the saga's definition's, to name the stage's
    /// step (an ended saga has none: pass `&[]`).
    pub fn applies_to(
        &self,
        status: &SagaStatus,
        stage: &Stage,
        steps: &[StepDef],
    ) -> Result<(), String> {
        let ended = |what: &str| {
            format!(
                "{what} applies only to a {}, and this one is {}; it has ended, nothing is left to {what}",
                if what == "cancel" { "running saga" } else { "parked saga" },
                status.name()
            )
        };
        match (self, status) {
            (_, s) if s.is_terminal() => Err(match self {
                Signal::Cancel if matches!(s, SagaStatus::Completed) => {
                    "cancel applies only to a running saga before its pivot, and this one has completed; `sagaflow refund ID` undoes a completed checkout".to_owned()
                }
                _ => ended(self.name()),
            }),
            (Signal::Retry, SagaStatus::Parked { .. }) => Ok(()),
            (Signal::Retry, other) => Err(format!(
                "retry applies only to a parked saga, and this one is {}; it is still trying on its own: wait for it to park (`sagaflow list --status parked`)",
                other.name()
            )),
            (Signal::Resolve { step, .. }, SagaStatus::Parked { .. }) => {
                match stage.step_name(steps) {
                    Some(parked) if parked == step => Ok(()),
                    Some(parked) => Err(format!(
                        "resolve names step {step}, but this saga is parked on {} of step {parked}: pass --step {parked}",
                        stage.phase.unwrap_or(Phase::Action).name()
                    )),
                    None => Err(format!(
                        "resolve names step {step}, but this saga is parked on no step (its journal could not be replayed); read `sagaflow show ID`"
                    )),
                }
            }
            (Signal::Resolve { .. }, other) => Err(format!(
                "resolve applies only to a parked saga, and this one is {}; it is still trying on its own",
                other.name()
            )),
            (Signal::Cancel, SagaStatus::Running) if stage.cancellable => Ok(()),
            // Parked before compensating a chain that may have passed its
            // pivot (Temporal's all-local steps): the operator who checked
            // the pivot did not happen may compensate.
            (Signal::Cancel, SagaStatus::Parked { .. })
                if stage.cancellable && stage.phase == Some(Phase::Action) =>
            {
                Ok(())
            }
            (Signal::Cancel, SagaStatus::Compensating)
            | (Signal::Cancel, SagaStatus::Parked { .. })
                if stage.phase == Some(Phase::Compensation) =>
            {
                Err(format!(
                    "this saga is already compensating{}",
                    if status.reason().is_some() {
                        "; it is parked on a compensation: `sagaflow retry ID` resumes it"
                    } else {
                        ": nothing more to cancel"
                    }
                ))
            }
            (Signal::Cancel, _) => Err(format!(
                "cancel applies only before the pivot, and this saga is {} at step {}, {}; once it completes, `sagaflow refund ID` undoes it",
                status.name(),
                stage.step_name(steps).unwrap_or("?"),
                if status.reason().is_some() {
                    "past its pivot"
                } else {
                    "at or past its pivot"
                }
            )),
        }
    }
}

/// What a saga may ask of the engine that runs it.
///
/// Implementations must be deterministic under replay: the same sequence of
/// calls gets the same answers, in the same order, after a crash.
pub trait SagaContext {
    /// The saga's id (also the workflow id on Temporal).
    fn saga_id(&self) -> &str;

    /// Deterministic "now" in milliseconds since the Unix epoch: the time of
    /// the latest event the saga has observed, never the wall clock.
    fn now_ms(&self) -> u64;

    /// Runs one attempt of an activity and returns its output or error.
    fn call_activity(
        &self,
        call: ActivityCall,
    ) -> impl Future<Output = Result<Value, ActivityError>>;

    /// A durable timer: completes after `delay_ms`, surviving restarts,
    /// or earlier with the operator command that arrives first (`None`
    /// when the timer fired). A command already waiting is returned at
    /// once, without starting a timer.
    fn sleep_or_signal(&self, delay_ms: u64) -> impl Future<Output = Option<Signal>>;

    /// Waits for the next operator command.
    fn wait_signal(&self) -> impl Future<Output = Signal>;

    /// The operator command waiting, if any, without waiting (the saga
    /// looks between steps, so that a cancel stops it after the step in
    /// progress).
    fn try_signal(&self) -> Option<Signal>;

    /// Publishes the saga's status (journal row, Temporal search attribute).
    fn set_status(&self, status: SagaStatus);

    /// Publishes where the saga stands, for checking operator commands
    /// (by reference: the context copies it only when it changed).
    fn set_stage(&self, stage: &Stage);

    /// Whether the change named `change` to the interpreter's behaviour
    /// applies to this saga. Temporal answers with the SDK's patch marker,
    /// so a history recorded before the change replays as it ran; the
    /// embedded engine journals results, not decisions, and always says
    /// yes. The interpreter asks only where its behaviour differs.
    fn patched(&self, change: &'static str) -> bool {
        let _ = change;
        true
    }

    /// The last step whose action an earlier run of the chain that holds
    /// step `index` may have done without the engine recording it: a crash
    /// makes the next worker run that chain again from where the record
    /// stops. The embedded engine records every result before the next
    /// step begins, so its chain is the step itself (the default). On
    /// Temporal, steps run as local activities in one workflow task form a
    /// chain. Must depend on the definition alone (deterministic).
    fn chain_end(&self, def: &SagaDef, index: usize) -> usize {
        let _ = def;
        index
    }

    /// Whether this run of the current chain is provably its first, so no
    /// earlier unrecorded run can have gone further than this one. True by
    /// default (an engine without chains). Must be deterministic under
    /// replay.
    fn first_run(&self) -> bool {
        true
    }

    /// Whether the engine wants to hear what ended ([`Self::finished`]):
    /// the interpreter builds no report otherwise. No by default.
    fn traced(&self) -> bool {
        false
    }

    /// A piece of the saga's work ended (for its trace). It must not
    /// change what the saga does next: engines only record it.
    fn finished(&self, work: Finished) {
        let _ = work;
    }
}

use crate::finished::Finished;
use crate::model::{SagaDef, StepDef};
use crate::status::SagaStatus;
