//! sagaflow as a library: the worker, the operator CLI and the admin API
//! of the `sagaflow` binary, for a shop's own binary to run.
//!
//! The public surface is deliberately small: [`main`] runs the CLI exactly
//! as the `sagaflow` binary does (parse the arguments, run the subcommand,
//! print the error). Everything below it is crate-private: the engines, the
//! trigger, the operator layer and the admin server change between
//! releases; the activity registration a shop's own steps need is the next
//! thing to be made public (ARCHITECTURE.md, "Your own steps").
//!
//! Errors reach the user through `anyhow` here only; the modules below
//! have their own error types.

mod admin;
mod app;
mod cli;
mod config;
mod engine;
mod metrics;
mod ops;
mod reconcile;
mod runtime;
mod telemetry;
mod trigger;

use std::process::ExitCode;

/// Runs the `sagaflow` command line with this process's arguments and
/// returns its exit code: 0 on success, 2 with the error on stderr (a
/// closed stdout, as with `sagaflow list | head`, is a success), and the
/// codes a subcommand documents (`check-config`, `reconcile`, ...).
pub fn main() -> ExitCode {
    let args = cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("sagaflow: {e:#}");
            ExitCode::from(2)
        }
    }
}
