//! The deterministic core of sagaflow.
//!
//! This crate holds the saga model, the validator of the saga definitions in
//! `sagas.toml` (and the diagnostics every config problem is reported with),
//! the runtime-neutral [`SagaContext`] trait, the one generic saga interpreter
//! ([`run_saga`]), retry-policy math and the saga status model.
//!
//! Architecture invariant: nothing here does I/O (the worker reads
//! `sagas.toml` and passes the text in), reads a clock, draws random numbers or knows
//! tokio. Engines (embedded journal, Temporal) live in the `sagaflow` crate and
//! implement [`SagaContext`]; this crate never knows which one runs it.

pub mod config;
pub mod context;
pub mod duration;
pub mod finished;
pub mod interpreter;
pub mod model;
pub mod replay;
pub mod retry;
pub mod status;

pub use config::{ConfigError, ConfigErrors};
pub use context::{
    ActivityCall, ActivityError, DependencyWait, Phase, SagaContext, Signal, Stage, BREAKER_OPEN,
};
pub use finished::{Finished, Work};
pub use interpreter::{run_saga, SagaOutcome};
pub use model::{RetryPolicy, SagaDef, StepDef};
pub use replay::{Command, ReplayContext, Resolution};
pub use status::SagaStatus;
