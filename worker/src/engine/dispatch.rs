//! Activity dispatch: runs one attempt on the tokio runtime, bounded by a
//! semaphore, through its dependency's breaker and with the step's time
//! limit ([`Registry::attempt`]), and sends its result back to the
//! core exactly once (a panic or cancellation is a retryable error).

use super::api::Msg;
use super::core::now_ms;
use super::state::Input;
use sagaflow_activities::Registry;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde_json::Value;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Runs activity attempts for the core.
pub(crate) struct Dispatcher {
    tx: Sender<Msg>,
    registry: Arc<Registry>,
    runtime: tokio::runtime::Handle,
    semaphore: Arc<Semaphore>,
}

impl Dispatcher {
    /// Attempts run on `runtime`, at most `max_concurrent` at once; results
    /// go to `tx`.
    pub(crate) fn new(
        tx: Sender<Msg>,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
        max_concurrent: usize,
    ) -> Dispatcher {
        Dispatcher {
            tx,
            registry,
            runtime,
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// Starts attempt `seq` of `saga_id`.
    pub(crate) fn dispatch(&self, saga_id: Arc<str>, seq: u32, call: ActivityCall) {
        let registry = self.registry.clone();
        let semaphore = self.semaphore.clone();
        let tx = self.tx.clone();
        self.runtime.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let mut report = Report {
                tx,
                saga_id,
                seq,
                started_ms: now_ms(),
                sent: false,
            };
            report.send(registry.attempt(call).await);
        });
    }
}

/// Sends an activity's result back to the core exactly once, even if the
/// activity panics (the report is then a retryable "panic" error).
struct Report {
    tx: Sender<Msg>,
    saga_id: Arc<str>,
    seq: u32,
    started_ms: u64,
    sent: bool,
}

impl Report {
    fn send(&mut self, result: Result<Value, ActivityError>) {
        self.sent = true;
        let _ = self.tx.send(Msg::Apply(Input::ActivityDone {
            saga_id: self.saga_id.clone(),
            seq: self.seq,
            started_ms: self.started_ms,
            finished_ms: now_ms(),
            result,
        }));
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(ActivityError::retryable(
                "panic",
                "the activity panicked or was cancelled; see the worker log",
            )));
        }
    }
}
