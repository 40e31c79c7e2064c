//! The embedded durable engine: a journal and replay on SQLite, in this
//! process.
//!
//! - [`api`]: configuration, errors, [`EngineHandle`] and the messages the
//!   loop takes; [`lifecycle`]: [`Engine`], starting and stopping the
//!   threads;
//! - [`state`]: the state machine that decides (`apply(message, now)` ->
//!   records + actions; no clock, I/O, channel or exit inside);
//! - [`event_loop`]: the thread around it: rounds, the hand-off to the
//!   writer, timers, and carrying actions out only after the journal
//!   commit that justifies them; it reads the clock and passes it in;
//! - [`dispatch`]: activity attempts on the runtime; [`inbox`]: operator
//!   commands from the journal's inbox; [`recovery`]: the journal read
//!   back as inputs for the state machine;
//! - [`journal`]: the on-disk format and the group-commit writer thread,
//!   with [`schema`] (its versions), [`journal_ids`] and [`retention`];
//! - [`read`]: read-only queries for the operator (as
//!   [`crate::engine::view`] rows); [`operator`]: commands queued in the
//!   inbox, the audit and bulk targets.
//!
//! Live sagas stay in memory; the journal is replayed only on start-up
//! (recovery). Activities run on the tokio runtime with bounded
//! concurrency; each is at-least-once, made safe by idempotency keys.

pub mod api;
mod dispatch;
pub mod event_loop;
mod inbox;
pub mod journal;
mod journal_ids;
pub mod lifecycle;
pub mod operator;
pub mod read;
pub(crate) mod recovery;
pub mod retention;
mod schema;
pub(crate) mod state;

pub use self::api::{Ended, EngineConfig, EngineError, EngineHandle};
pub use self::lifecycle::Engine;
