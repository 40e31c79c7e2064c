//! The Temporal engine: the same interpreter and activities on a Temporal
//! cluster.
//!
//! - [`workflow`]: `SagaWorkflow`, the one generic workflow; it runs
//!   `sagaflow_workflows::run_saga` over [`workflow::TemporalSaga`], the
//!   `SagaContext` on top of Temporal's workflow context;
//! - [`activities`]: every built-in activity name registered with the
//!   Temporal worker, each dispatching to the same [`Registry`] the embedded
//!   engine uses;
//! - [`client`]: starting sagas (workflow id = saga id, duplicate starts
//!   harmless), signals, and the views the CLI needs (list, show, history,
//!   stats) built from Temporal's visibility and histories;
//! - [`worker`]: connecting and running the Temporal worker;
//! - [`intake`]: what one worker has in progress, for its intake limit,
//!   and the window that keeps the cluster's task waits bounded;
//! - [`task_wait`]: how long the cluster keeps this worker's workflow
//!   tasks waiting, as the SDK measures it.
//!
//! Invariants:
//! - the resolved saga definition travels in the workflow input: a running
//!   saga never re-reads `sagas.toml`, and recorded histories replay alone;
//! - Temporal's own activity retries are off (one attempt per activity
//!   task): the interpreter's retry policy, with durable timers, is the only
//!   one, on both engines;
//! - status is a query (`status`) and the keyword search attribute
//!   `SagaStatus`, upserted only when it changes.
//!
//! [`Registry`]: sagaflow_activities::Registry

pub mod activities;
pub mod client;
pub mod history;
pub mod intake;
pub mod scope;
pub mod task_wait;
pub mod worker;
pub mod workflow;

#[cfg(test)]
mod replay_tests;
