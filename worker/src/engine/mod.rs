//! The embedded durable engine: journal + replay on SQLite.
//!
//! - [`journal`]: the on-disk format and the group-commit writer thread;
//! - [`core`]: the single-threaded loop that owns every live saga, decides
//!   (polls the interpreter) and hands effects out only after the journal
//!   commit that justifies them;
//! - [`read`]: read-only queries for the CLI (list, show, history, stats).
//!
//! Live sagas stay in memory; the journal is replayed only on start-up
//! (recovery). Activities run on the tokio runtime with bounded
//! concurrency; each is at-least-once, made safe by idempotency keys.

pub mod core;
pub mod journal;
pub mod read;

pub use self::core::{Definition, Ended, Engine, EngineConfig, EngineHandle, StartOutcome};
