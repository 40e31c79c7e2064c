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
}

impl ActivityError {
    /// A transient failure: the retry policy decides what happens next.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A business failure: retrying cannot help.
    pub fn business(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// An operator command delivered to a saga through the engine's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Retry the step or compensation the saga is parked on, with a fresh
    /// retry budget.
    Retry,
}

impl Signal {
    /// Parses a signal name ("retry").
    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "retry" => Some(Signal::Retry),
            _ => None,
        }
    }

    /// The signal's name as the CLI and the journal write it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Retry => "retry",
        }
    }

    /// Whether the signal applies to a saga in `status`, or why not. A
    /// signal that does not apply is refused, never kept: a retry kept for
    /// a running saga would be spent, unasked, at its next park.
    pub fn applies_to(self, status: &SagaStatus) -> Result<(), String> {
        match (self, status) {
            (Signal::Retry, SagaStatus::Parked { .. }) => Ok(()),
            (Signal::Retry, other) => Err(format!(
                "retry applies only to a parked saga, and this one is {}; {}",
                other.name(),
                if other.is_terminal() {
                    "it has ended, nothing is left to retry"
                } else {
                    "it is still trying on its own: wait for it to park (`sagaflow list --status parked`)"
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

    /// A durable timer: completes after `delay_ms`, surviving restarts.
    fn sleep(&self, delay_ms: u64) -> impl Future<Output = ()>;

    /// Waits for the next operator signal.
    fn wait_signal(&self) -> impl Future<Output = Signal>;

    /// Publishes the saga's status (journal row, Temporal search attribute).
    fn set_status(&self, status: SagaStatus);
}

use crate::status::SagaStatus;
