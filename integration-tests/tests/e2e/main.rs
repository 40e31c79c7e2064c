//! End-to-end tests: each drives the real `sagaflow` binary (built by the
//! same `cargo test` run) against its own data directory.

mod common;

/// A journal written by an earlier format still opens and recovers.
mod compat;
/// `check-config` exit codes and messages through the CLI.
mod config;
/// SIGKILL the worker at random instants; every invariant still holds.
mod crash;
/// Malformed messages are dead-lettered with a reason; valid ones run.
mod dead_letter;
/// The flash-sale demo and the inspection commands on its data.
mod demo;
/// The interpreter's scenarios on both engines (embedded and Temporal).
mod scenarios;
