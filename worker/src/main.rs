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

/// mimalloc rather than glibc's malloc: memory a saga's future or a
/// connection's buffers took on a runtime thread is often freed on the
/// core thread, where glibc paid for it in arena locks and consolidation
/// (about a third of the core thread's time at 2,000 sagas in flight), and
/// its per-thread free lists keep the resident set close to what is live.
/// The `mimalloc` feature (default) selects it; without it, heap profilers
/// that wrap `malloc` see every allocation.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
