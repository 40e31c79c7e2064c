//! The tokio runtimes of the binary's commands: the worker's
//! multi-threaded one, and a current-thread one for a command's single
//! call to a remote service.

use anyhow::Result;

/// Builds the multi-threaded runtime activities and the sandbox run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sagaflow-rt")
        .build()?)
}

/// Runs `f` to its end on a runtime of its own (the Temporal client and
/// the admin API client, from the CLI's synchronous commands).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}
