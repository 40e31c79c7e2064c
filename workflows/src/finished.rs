//! What the interpreter tells its engine as each piece of a saga's work
//! ends: the saga, each run of a step's action or compensation, and each
//! attempt. Engines turn these into trace spans (the worker's
//! `telemetry`); the interpreter only reports them, with saga times
//! ([`crate::SagaContext::now_ms`]), when the engine asks for them
//! ([`crate::SagaContext::traced`]).
//!
//! A report is built only then, so a worker without telemetry pays
//! nothing. Replay reports again what a saga already reported; engines
//! drop the reports of replayed work (the embedded engine while it
//! recovers a saga, Temporal while it replays history).

use crate::context::{ActivityError, Phase};

/// A piece of a saga's work that has ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The saga's id.
    pub saga_id: String,
    /// The saga definition's name.
    pub saga: String,
    /// The W3C `traceparent` the order came with, if any.
    pub traceparent: Option<String>,
    /// Saga time the work began (ms since the Unix epoch).
    pub started_ms: u64,
    /// Saga time it ended.
    pub ended_ms: u64,
    /// Which piece of work.
    pub work: Work,
}

/// The saga, a step's run, or one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// The whole saga, ended with `status` ("completed" or "compensated").
    Saga {
        /// The terminal status's name.
        status: &'static str,
    },
    /// One run of a step's action or compensation: its attempts from
    /// `first_attempt` until one succeeded or the policy gave up (an
    /// operator `retry` of a parked step starts another run).
    Step {
        /// The step's name.
        step: String,
        /// Action or compensation.
        phase: Phase,
        /// The idempotency key of its attempts.
        key: String,
        /// The number of the run's first attempt.
        first_attempt: u32,
        /// "completed", "failed" (the policy gave up) or "cancelled".
        outcome: &'static str,
    },
    /// One attempt of a step's run.
    Attempt {
        /// The step's name.
        step: String,
        /// Action or compensation.
        phase: Phase,
        /// The idempotency key.
        key: String,
        /// The number of the first attempt of the run it belongs to.
        first_attempt: u32,
        /// This attempt's number.
        attempt: u32,
        /// Why it failed; `None` when it succeeded.
        error: Option<ActivityError>,
    },
}
