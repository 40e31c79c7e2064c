//! `sagaflow`: the worker and operator CLI. The binary is the library's
//! [`sagaflow::main`] with the allocator chosen; a shop's own binary is the
//! same few lines.

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
    sagaflow::main()
}
