//! `sagaflow`: the worker and operator CLI.
//!
//! `main` parses arguments, builds the runtime and hands each subcommand to
//! one function in [`cli`]. Errors reach the user through `anyhow` here
//! only; the libraries below have their own error types.

mod app;
mod cli;
mod config;
mod engine;
mod metrics;
mod reconcile;
mod telemetry;
mod trigger;

use std::process::ExitCode;

fn main() -> ExitCode {
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
