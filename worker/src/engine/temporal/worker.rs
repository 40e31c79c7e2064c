//! Running a Temporal worker: the saga workflow and every activity on the
//! configured task queue, until told to stop.

use super::activities::TemporalActivities;
use super::client::{TemporalClient, TemporalError};
use super::task_wait::{TaskWait, TaskWaitMeter};
use super::workflow::SagaWorkflow;
use crate::config::TemporalSettings;
use sagaflow_activities::Registry;
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// Runs a worker until `stop` resolves, then shuts it down gracefully;
/// the workflow tasks' waits go to `wait`.
///
/// The returned future is not `Send` (the SDK runs workflows on a local
/// task set): await it on the thread that made it.
pub async fn run_worker(
    client: &TemporalClient,
    registry: Arc<Registry>,
    wait: Arc<TaskWait>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), TemporalError> {
    let telemetry = TelemetryOptions::builder()
        .metrics(Arc::new(TaskWaitMeter::new(wait)) as Arc<_>)
        .build();
    let options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(TemporalError::Request)?;
    let runtime =
        Runtime::from_current_tokio(options).map_err(|e| TemporalError::Request(e.to_string()))?;
    let settings = &client.settings;
    // `[temporal]`'s slots: with the SDK's defaults (100 of each) a worker
    // whose provider answers in 150 ms caps at about 660 calls a second.
    let slots = |n: usize| FixedSizeSlotSupplier::new(n);
    let tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(slots(settings.workflow_task_slots))
        .activity_task_slot_supplier(slots(settings.activity_slots))
        .local_activity_task_slot_supplier(slots(settings.local_activity_slots))
        .nexus_task_slot_supplier(slots(1))
        .build();
    let options = WorkerOptions::new(settings.task_queue.clone())
        .register_workflow::<SagaWorkflow>()
        .map_err(|e| TemporalError::Request(e.to_string()))?
        .register_activities(TemporalActivities { registry })
        .graceful_shutdown_period(SHUTDOWN_GRACE)
        .tuner(tuner)
        .max_cached_workflows(settings.workflow_cache)
        .build();
    let mut worker = Worker::new(&runtime, client.client.clone(), options)
        .map_err(|e| TemporalError::Request(e.to_string()))?;
    let shutdown = worker.shutdown_handle();
    let run = worker.run();
    tokio::pin!(run);
    tokio::pin!(stop);
    tokio::select! {
        result = &mut run => result.map_err(|e| TemporalError::Request(e.to_string()))?,
        _ = &mut stop => {
            shutdown();
            // The SDK's shutdown once hung for minutes after "Workflow
            // shutdown is done" (a chaos run, a worker stopped 30 s after
            // it started). A worker told to stop must stop: what it had
            // in flight is in the cluster's hands, and the tasks go to
            // another worker after their timeouts, as after a crash.
            match tokio::time::timeout(SHUTDOWN_GRACE + SHUTDOWN_SLACK, run).await {
                Ok(result) => result.map_err(|e| TemporalError::Request(e.to_string()))?,
                Err(_) => tracing::warn!(
                    "the Temporal SDK did not finish shutting down within {:?}; stopping anyway (tasks in flight go to another worker after their timeouts)",
                    SHUTDOWN_GRACE + SHUTDOWN_SLACK
                ),
            }
        }
    }
    Ok(())
}

/// How long running activities get to finish when the worker stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How much longer the SDK gets to wind down after that.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// A Temporal worker running on its own thread.
pub struct WorkerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl WorkerThread {
    /// Starts a worker for `settings` on a dedicated thread with its own
    /// runtime (the SDK's worker future is not `Send`, so it cannot be a
    /// task on the caller's runtime), its task waits going to `wait`.
    /// Returns once it is connected.
    pub async fn spawn(
        settings: &TemporalSettings,
        registry: Arc<Registry>,
        wait: Arc<TaskWait>,
    ) -> Result<WorkerThread, TemporalError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let settings = settings.clone();
        let thread = std::thread::Builder::new()
            .name("sagaflow-temporal".into())
            .spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("sagaflow-temporal-rt")
                    .build()
                    .map_err(|e| e.to_string())?;
                let result = rt.block_on(async move {
                    let client = TemporalClient::connect(&settings)
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = ready_tx.send(());
                    run_worker(&client, registry, wait, async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .map_err(|e| e.to_string())
                });
                // Not a plain drop, which waits for every task the SDK left.
                rt.shutdown_timeout(SHUTDOWN_SLACK);
                result
            })
            .map_err(|e| TemporalError::Request(format!("cannot start the worker thread: {e}")))?;
        if ready_rx.await.is_err() {
            let why = match thread.join() {
                Ok(Err(why)) => why,
                Ok(Ok(())) => "it stopped at once".into(),
                Err(_) => "it panicked".into(),
            };
            return Err(TemporalError::Request(format!(
                "the Temporal worker did not start: {why}"
            )));
        }
        Ok(WorkerThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// True when the worker has stopped on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Shuts the worker down gracefully and waits for it; reports why it
    /// failed, if it did. Blocks: call from a blocking context.
    pub fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the Temporal worker thread panicked".into()),
            None => Ok(()),
        }
    }
}
