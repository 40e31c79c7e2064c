//! The resolved saga definition: what the interpreter runs.
//!
//! A [`SagaDef`] is plain data, validated once when `sagas.toml` loads and then
//! passed to each saga as input (engines store it by [`SagaDef::hash`]), so a
//! running saga replays the definition it started with even if the file
//! changes.

use serde::{Deserialize, Serialize};

/// How a failed activity call is retried. Temporal-shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in milliseconds.
    pub initial_interval_ms: u64,
    /// Each further delay is the previous one times this (>= 1.0).
    pub backoff_coefficient: f64,
    /// Upper bound for any one delay, in milliseconds.
    pub max_interval_ms: u64,
    /// Attempts in all, the first included; 0 means no limit.
    pub max_attempts: u32,
    /// Error kinds that are never retried (e.g. "card_declined").
    pub non_retryable: Vec<String>,
    /// Fraction (0.0..1.0) by which a delay is shortened at most, chosen
    /// deterministically per saga, step and attempt, so that retries of many
    /// sagas spread out.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            max_interval_ms: 10_000,
            max_attempts: 5,
            non_retryable: Vec::new(),
            jitter: 0.2,
        }
    }
}

/// One step of a saga: an action and, before the pivot, its compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Unique within the saga; part of the idempotency key.
    pub name: String,
    /// Registered activity name run to do the step.
    pub action: String,
    /// Registered activity name run to undo the step (steps before the pivot).
    pub compensation: Option<String>,
    /// Time limit for one attempt of the action, in ms (and of the
    /// compensation, unless `compensation_timeout_ms` says otherwise).
    pub timeout_ms: u64,
    /// Time limit for one attempt of the compensation, in ms, when it
    /// differs from the action's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_timeout_ms: Option<u64>,
    /// Retry policy for the action.
    pub retry: RetryPolicy,
    /// How long the action (or its compensation) may wait in all for an
    /// open circuit breaker before its attempts count again, in ms;
    /// `None`: [`DEFAULT_MAX_WAIT_MS`]. Left out of the stored form when
    /// unset, so definitions written before it keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// When this step's outcome is unknown (its last attempt failed
    /// retryably), how long after that its compensation keeps trying,
    /// through every retryable failure, before its attempts count: the
    /// time the dependency may need to show what the step did (a payment
    /// provider's search lag), in ms. Left out of the stored form when
    /// unset, so definitions written before it keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
}

/// A step's `max_wait` when `sagas.toml` does not set one: 15 minutes,
/// longer than a provider's usual incident, shorter than a customer waits
/// for an order confirmation.
pub const DEFAULT_MAX_WAIT_MS: u64 = 15 * 60 * 1_000;

impl StepDef {
    /// How long this step may wait for open breakers, in ms.
    pub fn max_wait_ms(&self) -> u64 {
        self.max_wait_ms.unwrap_or(DEFAULT_MAX_WAIT_MS)
    }
}

/// A validated saga definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDef {
    /// The saga's name in `sagas.toml` (e.g. "checkout").
    pub name: String,
    /// Steps in forward order.
    pub steps: Vec<StepDef>,
    /// Index into `steps` of the pivot: once it succeeds the saga only goes
    /// forward. `None` means every step can be compensated.
    pub pivot: Option<usize>,
    /// Retry policy for compensations; when it is exhausted the saga parks.
    pub compensation_retry: RetryPolicy,
}

impl SagaDef {
    /// True when step `index` runs after the pivot (forward recovery only).
    pub fn is_after_pivot(&self, index: usize) -> bool {
        matches!(self.pivot, Some(p) if index > p)
    }

    /// A stable content hash (FNV-1a 64 over the canonical JSON form), used
    /// to store the definition once and tie each saga to the one it started
    /// with.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a SagaDef always serializes");
        format!("{:016x}", crate::retry::fnv1a64(&json))
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }
}
